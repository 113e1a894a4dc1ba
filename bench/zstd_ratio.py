"""How much zstd would save on expert blobs, per bit width, and how fast it decompresses.

    python bench/zstd_ratio.py HF_FOLDER [--bits 8 4 3 2] [--level 3] [--heldout TEXT] [--tokens 300]
        [--repeats 3] [--write bench/RESULTS.md]

Converts HF_FOLDER at each width and compresses every routed-expert blob with the
`zstandard` library, one core. With --heldout, also decodes held-out tokens one by one with the
expert cache at 25 % of the experts, storage cold (page cache dropped, direct I/O), from a raw
and a `--compress zstd` container (fresh process each, runs interleaved, median).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time

import statistics

import zstandard

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from edgemoe.format.container import open_container  # noqa: E402
from edgemoe.convert import convert_hf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import decode_in_fresh_process, report  # noqa: E402

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("--bits", nargs="+", default=["8", "4", "3", "2"])
    p.add_argument("--level", type=int, default=3)
    p.add_argument("--heldout", default=None)
    p.add_argument("--tokens", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", default=None)
    a = p.parse_args()
    lines = [f"\n### zstd on expert blobs ({datetime.date.today()})\n",
             f"Command: `python bench/zstd_ratio.py {' '.join(sys.argv[1:])}`\n",
             "| experts | compressed / raw | saved | decompress GB/s (1 core) | decode tok/s at 25 %, raw | "
             "zstd | zstd / raw |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for bits in a.bits:
            path = os.path.join(tmp, "m.emoe")
            convert_hf(a.src, path, bits=bits, resident_bits="8", progress=False)
            blobs = [b for row in open_container(path).experts for b in row]
            cctx, dctx = zstandard.ZstdCompressor(level=a.level), zstandard.ZstdDecompressor()
            raw = comp = 0
            seconds = 0.0
            with open(path, "rb") as f:
                for b in blobs:
                    f.seek(b["offset"])
                    data = f.read(b["size"])
                    z = cctx.compress(data)
                    raw, comp = raw + len(data), comp + len(z)
                    t0 = time.perf_counter()
                    dctx.decompress(z)
                    seconds += time.perf_counter() - t0
            speed = "| | |"
            if a.heldout:
                import edgemoe
                from edgemoe.offline.perplexity import read_text

                packed = os.path.join(tmp, "z.emoe")
                convert_hf(a.src, packed, bits=bits, resident_bits="8", progress=False, compress="zstd")
                m = edgemoe.load(path)
                ids = m.tokenize(read_text(a.heldout), add_special_tokens=False)[: a.tokens + 1]
                slots = max(m.config["top_k"], len(blobs) // 4)
                del m
                runs = {"raw": [], "zstd": []}
                for _ in range(a.repeats):
                    runs["raw"].append(decode_in_fresh_process(path, ids, cache_experts=slots, threads=2)["tok_s"])
                    runs["zstd"].append(decode_in_fresh_process(packed, ids, cache_experts=slots, threads=2)["tok_s"])
                r, z = statistics.median(runs["raw"]), statistics.median(runs["zstd"])
                speed = f"{r:.0f} | {z:.0f} | {z / r:.2f}x |"
            lines.append(f"| q{bits} | {comp / raw:.3f} | {100 * (1 - comp / raw):.1f} % | {raw / seconds / 1e9:.2f} | "
                         + speed)
    report("\n".join(lines) + "\n", a.write)


if __name__ == "__main__":
    main()
