"""Prefill and decode tokens/s and peak RSS of a converted model at a given memory budget.

    python bench/bench_generate.py MODEL.emoe [--memory-budget 1GB] [--threads 2]
        [--prompt-tokens 128] [--decode-tokens 64] [--write bench/RESULTS.md]

Each configuration runs in a fresh subprocess so peak RSS (psutil, sampled by
a watcher thread, and the kernel's ru_maxrss) belongs to that run alone.
Optionally drops the page cache first (root only) so expert reads are cold.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time

from bench_util import drop_page_cache, report

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def run_once(args) -> dict:
    import numpy as np
    import psutil

    import edgemoe

    proc = psutil.Process()
    peak = {"rss": proc.memory_info().rss}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], proc.memory_info().rss)
            time.sleep(0.005)

    baseline_rss = proc.memory_info().rss
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    model = edgemoe.load(args.model, memory_budget=args.memory_budget, threads=args.threads,
                         ctx_size=args.prompt_tokens + args.decode_tokens + 8)
    load_s = time.perf_counter() - t0
    vocab = model.info()["vocab"]
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, vocab, size=args.prompt_tokens).tolist()
    # Decode is teacher-forced with random ids: greedy decoding of a random-
    # weight model repeats one token, which would make every expert a cache hit.
    decode_ids = rng.integers(0, vocab, size=args.decode_tokens).tolist()

    model.reset_stats()
    t0 = time.perf_counter()
    model.eval(prompt)
    prefill_s = time.perf_counter() - t0
    prefill_stats = model.stats()

    model.reset_stats()
    t0 = time.perf_counter()
    for token in decode_ids:
        model.eval([token])
    decode_s = time.perf_counter() - t0
    decode_stats = model.stats()
    stop.set()
    watcher.join()
    info = model.info()
    return {
        "model": os.path.basename(args.model),
        "memory_budget": args.memory_budget,
        "expert_slots": info["memory_plan"]["expert_slots"],
        "plan_bytes": info["memory_plan"]["total_bytes"],
        "threads": model.threads,
        "load_s": load_s,
        "prefill_tok_s": args.prompt_tokens / prefill_s,
        "decode_tok_s": args.decode_tokens / decode_s,
        "decode_hit_rate": decode_stats["cache_hit_rate"],
        "decode_mb_read_per_tok": decode_stats["bytes_read"] / 1e6 / args.decode_tokens,
        "decode_io_wait_s": decode_stats["io_wait_s"],
        "prefill_mb_read": prefill_stats["bytes_read"] / 1e6,
        "baseline_rss_mb": baseline_rss / 1e6,
        "peak_rss_mb": peak["rss"] / 1e6,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--memory-budget", action="append", default=None,
                   help="repeatable; 'none' for unlimited")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--cold", action="store_true", help="drop the page cache before each run (root)")
    p.add_argument("--write", default=None, help="append a results table to this markdown file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        args.memory_budget = None if args.memory_budget[0] == "none" else args.memory_budget[0]
        print(json.dumps(run_once(args)))
        return

    rows = []
    for budget in args.memory_budget or ["none"]:
        if args.cold and not drop_page_cache():
            print("warning: cannot drop the page cache (not root?)", file=sys.stderr)
        cmd = [sys.executable, __file__, args.model, "--child", "--memory-budget", budget,
               "--prompt-tokens", str(args.prompt_tokens), "--decode-tokens", str(args.decode_tokens)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row))

    header = ("| model | budget | slots | threads | prefill tok/s | decode tok/s | decode hit rate | "
              "MB read/token | peak RSS MB | baseline RSS MB |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = "".join(
        f"| {r['model']} | {r['memory_budget'] or 'none'} | {r['expert_slots']} | {r['threads']} | "
        f"{r['prefill_tok_s']:.1f} | {r['decode_tok_s']:.1f} | {r['decode_hit_rate']:.1%} | "
        f"{r['decode_mb_read_per_tok']:.2f} | {r['peak_rss_mb']:.0f} | {r['baseline_rss_mb']:.0f} |\n"
        for r in rows)
    table = header + lines
    if args.write:
        cmdline = "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:])
        report(f"\n### bench_generate ({datetime.date.today()})\n\n"
               f"Command: `{cmdline}`  \nMachine: {platform.machine()}, {os.cpu_count()} CPUs, "
               f"{platform.platform()}; page cache {'dropped' if args.cold else 'warm'} before each run.\n\n" + table,
               args.write)
    else:
        print(table)


if __name__ == "__main__":
    main()
