"""The KV cache in f32 against f16: decode speed as the context grows, the cache's memory, and
(given a text file) perplexity.

    python bench/kv_cache.py MODEL.emoe [--tokens 512 2048] [--repeats 2] [--text heldout.txt]
        [--write bench/RESULTS.md]

Decode: random token ids fed one by one from an empty context up to --tokens (every expert in
RAM, the two cache types alternated, each run in a fresh process so machine drift spreads over both);
reported as tokens/s over the whole run, median of --repeats.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import edgemoe  # noqa: E402
from bench_util import decode_in_fresh_process, report  # noqa: E402
from edgemoe import _core  # noqa: E402
from edgemoe.format.container import open_container  # noqa: E402
from edgemoe.offline.perplexity import perplexity  # noqa: E402

KINDS = ("f32", "f16")


def decode_tok_s(path: str, kv: str, ids, threads: int) -> float:
    stats = decode_in_fresh_process(path, ids, threads=threads, ctx_size=len(ids) + 8, kv_cache=kv)
    return (len(ids) - 1) / stats["seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--tokens", type=int, nargs="+", default=[512, 2048])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--text", default=None, help="a text file for perplexity (the model's tokenizer)")
    p.add_argument("--ppl-ctx", type=int, default=512)
    p.add_argument("--write", default=None)
    a = p.parse_args()

    cfg = open_container(a.model).config
    rng = np.random.default_rng(0)
    lines = [f"### KV cache: f32 vs f16 ({datetime.date.today()})", "",
             f"Command: `python bench/kv_cache.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; "
             f"model {os.path.basename(a.model)} ({cfg['n_layers']} layers)", "",
             "| tokens decoded | f32 tok/s | f16 tok/s | f16 / f32 | f32 cache MiB | f16 cache MiB |",
             "|---|---|---|---|---|---|"]
    for n in a.tokens:
        ids = rng.integers(0, cfg["vocab"], n).tolist()
        runs = {kv: [] for kv in KINDS}
        for _ in range(a.repeats):
            for kv in KINDS:
                runs[kv].append(decode_tok_s(a.model, kv, ids, a.threads))
        med = {kv: statistics.median(v) for kv, v in runs.items()}
        mib = {kv: _core.kv_cache_bytes(cfg, {"ctx_size": n, "kv_cache": kv}) / 2**20 for kv in KINDS}  # what load() plans for it
        lines.append(f"| {n} | {med['f32']:.1f} | {med['f16']:.1f} | {med['f16'] / med['f32']:.2f}x | "
                     f"{mib['f32']:.1f} | {mib['f16']:.1f} |")
        print(lines[-1], flush=True)
    if a.text:
        with open(a.text, encoding="utf-8") as f:
            text = f.read()
        lines += ["", f"Perplexity of {os.path.basename(a.text)} (window {a.ppl_ctx}):"]
        for kv in KINDS:
            model = edgemoe.load(a.model, threads=a.threads, ctx_size=a.ppl_ctx, kv_cache=kv)
            r = perplexity(model, model.tokenize(text), ctx=a.ppl_ctx)
            lines.append(f"- {kv}: {r['perplexity']:.3f} over {r['tokens']} tokens")
            print(lines[-1], flush=True)
    report("\n".join(lines) + "\n\n", a.write)


if __name__ == "__main__":
    main()
