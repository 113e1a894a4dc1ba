"""Decode speed under one memory limit: a model and its pruned or merged conversions.

    python bench/reduction_decode.py FULL.emoe REDUCED.emoe [REDUCED2.emoe ...] [--fraction 0.25]
        [--prompt 64] [--decode 32] [--repeats 3] [--threads 2] [--write bench/RESULTS.md]

Every run is a fresh process inside a cgroup-v1 limit of FRACTION x FULL's file size (the same limit
for all: a smaller model keeps more of its experts in it), page cache dropped first, decoding the
same tokens (FULL's prompt and greedy continuation, teacher forced); models alternate, the median of
--repeats runs is reported. Root only. What a pruned or merged model computes is another matter:
bench/expert_reduction.py measures that.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys

from bench_util import drop_page_cache, expert_bytes, report, set_cgroup_limit
from compare import run_child
from streaming_peers import add_limited_run_args, limited_run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from edgemoe.format.container import open_container  # noqa: E402

MiB = 1 << 20


def describe(path: str) -> str:
    c = open_container(path)
    r = c.manifest.get("expert_reduction")
    if not r:
        return "as converted"
    return f"{r['method']} {r['fraction']:.0%}" + (f" + rank-{r['low_rank']} corrections" if r.get("low_rank") else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+")
    add_limited_run_args(p)
    a = p.parse_args()

    prep, limit, common = limited_run(a.models[0], a)
    runs = {m: [] for m in a.models}
    for _ in range(a.repeats):
        for m in a.models:
            drop_page_cache()
            r = run_child("edgemoe", m, dict(common, cgroup=set_cgroup_limit(limit), load={}), 900)
            if "error" in r:
                sys.exit(f"{m}: {r['error']}")
            runs[m].append(r)
    first = statistics.median(r["decode_tok_s"] for r in runs[a.models[0]])
    lines = [f"### Decode under one memory limit: {os.path.basename(a.models[0])} pruned and merged ({datetime.date.today()})",
             "", f"Command: `python bench/reduction_decode.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; a cgroup-v1 limit of {a.fraction:.0%} of "
             f"{os.path.basename(a.models[0])}'s file ({limit / MiB:.0f} MiB) for every model, cold; "
             f"{len(prep['prompt'])}-token prompt, {a.decode} greedy tokens teacher forced, {a.threads} threads; "
             f"median of {a.repeats} interleaved runs (all runs in brackets).", "",
             "| model | reduction | experts per layer | expert MiB (corrections included) | decode tok/s | vs first | MB read/token | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for m, rs in runs.items():
        c = open_container(m)
        median = statistics.median(r["decode_tok_s"] for r in rs)
        speeds = ", ".join(f"{r['decode_tok_s']:.2f}" for r in rs)
        lines.append(f"| {os.path.basename(m)} | {describe(m)} | {c.config['n_experts']} | "
                     f"{expert_bytes(m) / MiB:.0f} | {median:.2f} ({speeds}) | "
                     f"{median / first:.2f}x | {statistics.median(r['read_mb_per_tok'] for r in rs):.1f} | "
                     f"{max(r['peak_rss_mb'] for r in rs):.0f} |")
    report("\n".join(lines) + "\n", a.write)


if __name__ == "__main__":
    main()
