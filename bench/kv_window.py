"""KV-cache bytes of a sliding-window model (gpt-oss-20b's attention) against every layer keeping
full K and V, from the memory plan's own formula (csrc/model/kv_cache.cpp), at several contexts.

    python bench/kv_window.py [--config CONFIG.json] [--layers 24] [--write bench/RESULTS.md]

CONFIG.json: a gpt-oss config.json (default: gpt-oss-20b's shape as bench/make_synthetic.py
writes it, at 24 layers). fp16 cache, prefill batches of 256 (the engine's defaults).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_util import report  # noqa: E402
from edgemoe import _core  # noqa: E402
from edgemoe.convert.hf import pick_arch  # noqa: E402
from edgemoe.format.model_config import validate_config  # noqa: E402

GPT_OSS_20B = {
    "architectures": ["GptOssForCausalLM"], "hidden_size": 2880, "intermediate_size": 2880,
    "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "num_local_experts": 32,
    "num_experts_per_tok": 4, "vocab_size": 201088, "sliding_window": 128, "max_position_embeddings": 131072,
    "rope_parameters": {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0,
                        "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 4096},
}
CONTEXTS = (4096, 32768, 131072)
MiB = 1 << 20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None)
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--write", default=None)
    a = p.parse_args()
    hf = json.load(open(a.config)) if a.config else dict(GPT_OSS_20B)
    hf["num_hidden_layers"] = a.layers
    hf.pop("layer_types", None)  # gpt-oss's default: sliding on even layers
    cfg = validate_config(pick_arch(hf).config(hf))
    full = dict(cfg, sliding_window=0, sliding_layers=[])
    lines = [f"\n### KV cache of sliding-window layers ({datetime.date.today()})\n",
             f"Command: `{' '.join(['python bench/kv_window.py'] + sys.argv[1:])}`. gpt-oss-20b's attention "
             f"({a.layers} layers, {cfg['n_kv_heads']} KV heads of {cfg['head_dim']}, window "
             f"{cfg['sliding_window']} on {len(cfg['sliding_layers'])} of them), fp16 cache, prefill batches "
             f"of 256; computed by the memory plan's formula, which the engine allocates (tests compare the two).\n",
             "| context | sliding layers keep their window | every layer keeps the context | ratio | "
             "bytes per token of context (past the window) |", "|---|---|---|---|---|"]
    for ctx in CONTEXTS:
        opts = {"ctx_size": ctx, "max_batch": 256, "kv_cache": "f16"}
        ours, theirs = _core.kv_cache_bytes(cfg, opts), _core.kv_cache_bytes(full, opts)
        per_token = (_core.kv_cache_bytes(cfg, dict(opts, ctx_size=ctx + 1024)) - ours) / 1024
        lines.append(f"| {ctx} | {ours / MiB:.0f} MiB | {theirs / MiB:.0f} MiB | {ours / theirs:.2f} | "
                     f"{per_token / 1024:.0f} KiB (full: {theirs / ctx / 1024:.0f} KiB) |")
    report("\n".join(lines) + "\n", a.write)


if __name__ == "__main__":
    main()
