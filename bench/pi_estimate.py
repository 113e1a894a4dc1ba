"""An estimate, not a measurement: decode tokens/s on a Raspberry Pi 5 class board.

    python bench/pi_estimate.py [--write bench/RESULTS.md]

Decoding is bound by bytes moved: every token reads the resident weights and its active
experts from RAM, and the experts the cache misses from storage. With the board's bandwidths
(assumed below, from public figures, not measured here) the least time per token is

        resident + active expert bytes              missed expert bytes
    max(------------------------------, compute) + -------------------
            memory bandwidth (eff.)                 storage bandwidth

(storage reads are not overlapped with compute: bench/RESULTS.md shows prefetch does not hide
them). Compute: the demo's measured 0.59 ms per token on this x86 machine taken as 3x slower on
the A76 cores (1.8 ms; an assumption); for the OLMoE-sized model ~1.3 G int8 multiply-adds per
token at ~300 G/s (4 cores x SDOT, peak), 5 ms, below its memory term anyway.
Miss rates: the demo model's measured ones (EdgeMoE policy, bench_pipeline) and, for an
OLMoE-1B-7B-sized model, uniform routing (the cache's worst case: miss = 1 - cached share).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import report  # noqa: E402

# Raspberry Pi 5 (BCM2712, 4x Cortex-A76, LPDDR4X-4267): ~10 GB/s effective read bandwidth
# for a streaming matvec; storage: NVMe on the PCIe 2.0 x1 HAT ~0.45 GB/s random 4 KiB-aligned
# MB-sized reads; a UHS-I SD card ~0.09 GB/s.
MEM_GBS = 10.0
STORAGE = {"NVMe (PCIe x1)": 0.45, "SD card (UHS-I)": 0.09}

MiB = 1 << 20
# name: resident bytes, bytes of one expert, experts per token, experts in total, miss rate per
# cache share, compute seconds per token
MODELS = {
    # demo: 3.87 MiB resident (q8), 204 KiB experts (q8), 8 layers x top-2 of 16; misses measured
    # (bench/RESULTS.md, decode at 100/50/25/12.5 % with the EdgeMoE policy, cold start included)
    "demo (q8)": (3.87 * MiB, 204 * 1024, 16, 128, {1.0: 0.021, 0.5: 0.061, 0.25: 0.209, 0.125: 0.444}, 1.8e-3),
    # OLMoE-1B-7B shaped, q4 experts (20 B per 32 weights): 16 layers, top-8 of 64, hidden 2048,
    # expert intermediate 1024; resident q8 attention + embeddings ~ 0.35 GB; uniform routing
    "OLMoE-1B-7B-sized (q4)": (0.35e9, 3 * 2048 * 1024 * 20 / 32, 128, 1024,
                               {1.0: 0.0, 0.5: 0.5, 0.25: 0.75, 0.125: 0.875}, 5e-3),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", default=None)
    a = p.parse_args()
    lines = [f"\n### Raspberry Pi 5 class board: an ESTIMATE from bytes per token, not a measurement "
             f"({datetime.date.today()})\n",
             "Command: `python bench/pi_estimate.py`. Assumed: memory {:.0f} GB/s effective; storage {}. "
             "See the script's docstring for the model.\n".format(
                 MEM_GBS, ", ".join(f"{k} {v:.2f} GB/s" for k, v in STORAGE.items())),
             "| model | expert cache | MB from RAM / token | MB from storage / token | "
             + " | ".join(f"tok/s, {k}" for k in STORAGE) + " |",
             "|---|---|---|---|" + "---|" * len(STORAGE)]
    for name, (resident, expert, active, total, misses, compute) in MODELS.items():
        for share, miss in misses.items():
            ram = resident + active * expert
            disk = active * expert * miss
            speeds = [1.0 / (max(ram / (MEM_GBS * 1e9), compute) + disk / (gbs * 1e9)) for gbs in STORAGE.values()]
            lines.append(f"| {name} | {share:.1%} | {ram / 1e6:.0f} | {disk / 1e6:.1f} | "
                         + " | ".join(f"{s:.1f}" for s in speeds) + " |")
    lines.append("\nFor the OLMoE-sized model the storage term dominates as soon as the cache holds less "
                 "than the whole model (at 25 % on NVMe ~0.8 s per token): on such a board a budget near the "
                 "model's size, or 3/2-bit experts (--bits auto), matters more than anything else.\n")
    report("\n".join(lines) + "\n", a.write)


if __name__ == "__main__":
    main()
