"""Direct-read bandwidth of the storage a model sits on, against queue depth and read size: the
figure the physical bound per token needs (issue 20), and what decides how many reads an expert
store should keep in flight.

    python bench/disk_curve.py FILE [--sizes 65536 262144 1048576 4194304] [--depths 1 2 4 8 16]
        [--seconds 2] [--write bench/RESULTS.md]

FILE: any large file on that storage (a converted model). Each cell reads random 4 KiB-aligned
ranges of FILE with O_DIRECT (no page cache), `depth` reads in flight (one thread per read; the
reads release the GIL), for about --seconds, after dropping the page cache (root). Linux only.
"""
from __future__ import annotations

import argparse
import datetime
import mmap
import os
import platform
import sys
import threading
import time
from typing import List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import drop_page_cache, report  # noqa: E402

ALIGN = 4096


def bandwidth(path: str, size: int, depth: int, seconds: float, seed: int, starts=None) -> float:
    """Bytes per second of `depth` concurrent O_DIRECT readers of `size`-byte random ranges: anywhere
    in the file, or at random ones of `starts` (aligned offsets: a container's expert blobs)."""
    size = -(-size // ALIGN) * ALIGN  # direct reads are whole pages
    file_size = os.path.getsize(path)
    slots = (file_size - size) // ALIGN
    if slots < 1:
        raise SystemExit(f"{path} is smaller than one {size}-byte read")
    if starts is not None:
        starts = [int(o) for o in starts if o % ALIGN == 0 and o + size <= file_size]
    deadline = time.perf_counter() + seconds
    done: List[int] = [0] * depth

    def reader(i: int) -> None:
        rng = np.random.default_rng(seed * 1000 + i)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, size)  # page-aligned, as O_DIRECT needs
        try:
            while time.perf_counter() < deadline:
                offset = int(rng.choice(starts)) if starts else int(rng.integers(slots)) * ALIGN
                done[i] += os.preadv(fd, [buf], offset)
        finally:
            buf.close()
            os.close(fd)

    start = time.perf_counter()
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(depth)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file")
    p.add_argument("--sizes", type=int, nargs="+", default=[65536, 262144, 1048576, 4194304])
    p.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--write", default=None)
    a = p.parse_args()
    dropped = True
    rows = []
    for size in a.sizes:
        cells = []
        for depth in a.depths:
            dropped &= drop_page_cache()
            gbps = bandwidth(a.file, size, depth, a.seconds, seed=size + depth) / 1e9
            cells.append(gbps)
            print(f"{size >> 10} KiB x {depth}: {gbps:.2f} GB/s", flush=True)
        best = int(np.argmax(cells))
        rows.append(f"| {size >> 10} KiB | " + " | ".join(f"{c:.2f}" for c in cells) +
                    f" | {cells[best]:.2f} at depth {a.depths[best]} |")
    text = (f"\n### Direct-read bandwidth against queue depth and read size ({datetime.date.today()})\n\n"
            f"Command: `python bench/disk_curve.py {' '.join(sys.argv[1:])}`  \n"
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; random 4 KiB-aligned "
            f"reads of a {os.path.getsize(a.file) / 2 ** 30:.1f} GiB file with O_DIRECT, about {a.seconds:g} s "
            f"per cell{', page cache dropped before each' if dropped else ' (page cache not dropped: not root)'}; "
            f"GB/s.\n\n| read size | " + " | ".join(f"depth {d}" for d in a.depths) + " | best |\n|---|" +
            "---|" * (len(a.depths) + 1) + "\n" + "\n".join(rows) + "\n")
    report(text, a.write)


if __name__ == "__main__":
    main()
