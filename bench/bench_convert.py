"""Converter speed and peak memory: does conversion stream tensor by tensor?

    python bench/bench_convert.py HF_FOLDER [--bits 8] [--write bench/RESULTS.md]

Runs `edgemoe convert` in a child process, samples its RSS every 10 ms with
psutil, and reports the peak next to the model's size and its largest single
tensor (the figure the peak should stay near).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time

import psutil

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from edgemoe.convert.safetensors_reader import Checkpoint  # noqa: E402
from bench_util import report


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("src")
    p.add_argument("--bits", default="8")
    p.add_argument("--write", default=None)
    a = p.parse_args()
    ckpt = Checkpoint(a.src)
    sizes = {n: int(__import__("numpy").prod(ckpt.shape(n))) * 4 for n in ckpt.names()}
    largest = max(sizes.values())
    source_bytes = sum(os.path.getsize(os.path.join(a.src, f)) for f in os.listdir(a.src) if f.endswith(".safetensors"))
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(a.src))) as tmp:
        out = os.path.join(tmp, "model.emoe")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "edgemoe", "convert", a.src, "-o", out, "--bits", a.bits, "-q"])
        ps = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                peak = max(peak, ps.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(f"convert failed with exit code {proc.returncode}")
        out_bytes = os.path.getsize(out)
    mb = 1e6
    table = ("| source | bits | source MB | output MB | largest tensor (f32) MB | converter peak RSS MB | seconds | MB/s |\n"
             "|---|---|---|---|---|---|---|---|\n"
             f"| {os.path.basename(os.path.normpath(a.src))} | {a.bits} | {source_bytes / mb:.0f} | {out_bytes / mb:.0f} | "
             f"{largest / mb:.1f} | {peak / mb:.0f} | {elapsed:.1f} | {source_bytes / mb / elapsed:.0f} |\n")
    if a.write:
        report(f"\n### Converter ({datetime.date.today()})\n\nCommand: `python bench/bench_convert.py {a.src} "
               f"--bits {a.bits} --write {a.write}`  \nMachine: {platform.machine()}, {os.cpu_count()} CPUs\n\n"
               "Peak RSS includes the Python interpreter and numpy (~30 MB).\n\n" + table, a.write)
    else:
        print(table)


if __name__ == "__main__":
    main()
