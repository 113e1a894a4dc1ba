"""How many I/O threads read experts: decode speed under a memory limit against `io_threads`, the
measurement behind its default (csrc/runtime/options.h).

    python bench/io_threads.py MODEL.emoe [--values 0 1 2 4 8] [--fraction 0.25] [--prompt 64]
        [--decode 32] [--repeats 3] [--threads 2] [--text README.md] [--write bench/RESULTS.md]

Each run is a fresh process inside a cgroup-v1 limit of FRACTION x the container's size, page
cache dropped first, decoding the same tokens (a prompt from --text, then the greedy
continuation, teacher forced) with one value of io_threads; values alternate, the median of
--repeats runs is reported. Root only.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys

from bench_util import drop_page_cache, report, set_cgroup_limit
from compare import run_child
from streaming_peers import add_limited_run_args, limited_run

MiB = 1 << 20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("emoe")
    p.add_argument("--values", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    add_limited_run_args(p)
    a = p.parse_args()

    prep, limit, common = limited_run(a.emoe, a)
    runs = {v: [] for v in a.values}
    for _ in range(a.repeats):
        for v in a.values:
            drop_page_cache()
            cg = set_cgroup_limit(limit)
            r = run_child("edgemoe", a.emoe, dict(common, cgroup=cg, load={"io_threads": v}), 600)
            if "error" in r:
                sys.exit(f"io_threads={v}: {r['error']}")
            runs[v].append(r)
    lines = [f"\n### Reads in flight: decode speed against io_threads ({datetime.date.today()})\n",
             f"Command: `python bench/io_threads.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; "
             f"{os.path.basename(a.emoe)} under a cgroup-v1 limit of {a.fraction:.1%} ({limit / MiB:.0f} MiB), cold; "
             f"{len(prep['prompt'])}-token prompt, {a.decode} greedy tokens teacher forced, {a.threads} compute "
             f"threads; median of {a.repeats} interleaved runs (all runs in brackets).\n",
             "| io_threads | decode tok/s | vs 1 | MB read/token | peak RSS MiB |", "|---|---|---|---|---|"]
    median = {v: statistics.median(r["decode_tok_s"] for r in rs) for v, rs in runs.items()}
    one = median.get(1, float("nan"))
    for v, rs in runs.items():
        speeds = ", ".join(f"{r['decode_tok_s']:.1f}" for r in rs)
        lines.append(f"| {v} | {median[v]:.2f} ({speeds}) | {median[v] / one:.2f}x | "
                     f"{statistics.median(r['read_mb_per_tok'] for r in rs):.1f} | "
                     f"{max(r['peak_rss_mb'] for r in rs):.0f} |")
    report("\n".join(lines) + "\n", a.write)


if __name__ == "__main__":
    main()
