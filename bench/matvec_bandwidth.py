"""Single-threaded matrix-vector products over matrices far larger than the caches, per weight
type and kernel variant: the read bandwidth a decode step's kernels reach from DRAM.

    python bench/matvec_bandwidth.py [--isa avx2 --isa avx512] [--repeats 5] [--write bench/RESULTS.md]

Each shape holds 128 M weights (64-256 MB encoded); the best of --repeats runs is reported, as
GB/s of encoded weights read and Gweights/s. One thread, so it measures the kernel's own ability
to keep DRAM busy (decode runs one such kernel per thread).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np

from edgemoe import _core
from edgemoe.format import quant as Q
from bench_util import replace_section, section_key

SHAPES = ((65536, 2048), (16384, 8192), (262144, 512))  # rows x k: typical, long and short rows
TYPES = (Q.Q8, Q.Q4K, Q.Q4, Q.F16)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--isa", action="append", default=None, help="kernel variants (default: every SIMD one here)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--write", default=None, help="append the table to this markdown file")
    a = p.parse_args()
    isas = a.isa or [i for i in _core.available_isas() if i != "scalar"]
    rng = np.random.default_rng(0)
    lines = [f"\n### Matrix-vector bandwidth from DRAM, one thread ({datetime.date.today()})\n",
             f"Command: `python bench/matvec_bandwidth.py {' '.join(f'--isa {i}' for i in isas)} "
             f"--repeats {a.repeats}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}\n",
             "| rows x k | variant | " + " | ".join(f"{Q.NAMES[t]} GB/s (Gw/s)" for t in TYPES) + " |",
             "|---|---|" + "---|" * len(TYPES)]
    print("\n".join(lines))
    for rows, k in SHAPES:
        w = (rng.standard_normal((rows, k)) * 0.02).astype(np.float32)
        x = rng.standard_normal((1, k)).astype(np.float32)
        bufs = {t: Q.quantize(w, t) for t in TYPES}
        del w
        for isa in isas:
            _core.set_isa(isa)
            cells = []
            for t, buf in bufs.items():
                best = min(_timed(lambda: _core.matmul(t, buf, rows, x)) for _ in range(a.repeats))
                cells.append(f"{buf.nbytes / best / 1e9:.1f} ({rows * k / best / 1e9:.1f})")
            lines.append(f"| {rows} x {k} | {isa} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    if a.write:  # the lines were printed as they came
        replace_section(a.write, section_key(), "\n".join(lines))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
