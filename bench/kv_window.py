"""KV-cache bytes of a sliding-window model (gpt-oss-20b's or gemma-4-26B-A4B's attention) against
every layer keeping full K and V, from the memory plan's own formula (csrc/model/kv_cache.cpp), at
several contexts.

    python bench/kv_window.py [--arch gpt_oss|gemma4] [--config CONFIG.json] [--layers N]
        [--write bench/RESULTS.md]

CONFIG.json: a config.json of that architecture (default: gpt-oss-20b's shape as
bench/make_synthetic.py writes it, 24 layers; gemma-4-26B-A4B's, 30 layers: 25 sliding layers of
8 KV heads of 256, window 1024, 5 global ones of 2 KV heads of 512). fp16 cache, prefill batches of
256 (the engine's defaults).
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
GEMMA4_26B = {
    "architectures": ["Gemma4ForCausalLM"], "hidden_size": 2816, "intermediate_size": 2112,
    "moe_intermediate_size": 704, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
    "global_head_dim": 512, "num_global_key_value_heads": 2, "attention_k_eq_v": True, "enable_moe_block": True,
    "num_experts": 128, "top_k_experts": 8, "hidden_size_per_layer_input": 0, "vocab_size": 262144,
    "sliding_window": 1024, "max_position_embeddings": 262144, "final_logit_softcapping": 30.0,
}
DEFAULTS = {"gpt_oss": (GPT_OSS_20B, 24), "gemma4": (GEMMA4_26B, 30)}
CONTEXTS = (4096, 32768, 131072)
MiB = 1 << 20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="gpt_oss", choices=sorted(DEFAULTS))
    p.add_argument("--config", default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--write", default=None)
    a = p.parse_args()
    default, layers = DEFAULTS[a.arch]
    hf = json.load(open(a.config)) if a.config else dict(default)
    hf["num_hidden_layers"] = a.layers = a.layers or layers
    hf.pop("layer_types", None)  # each family's default pattern
    cfg = validate_config(pick_arch(hf).config(hf))
    # every layer keeping the context: a window as long as the longest context
    full = dict(cfg, sliding_window=cfg["max_position"])
    widths = f"{cfg['n_kv_heads']} KV heads of {cfg['head_dim']}, window {cfg['sliding_window']} on " \
             f"{len(cfg['sliding_layers'])} of them"
    if cfg.get("global_head_dim"):
        widths += f"; the others {cfg['global_kv_heads']} KV heads of {cfg['global_head_dim']}"
    name = {"gpt_oss": "gpt-oss-20b", "gemma4": "gemma-4-26B-A4B"}[a.arch]
    lines = [f"\n### KV cache of sliding-window layers: {name} ({datetime.date.today()})\n",
             f"Command: `{' '.join(['python bench/kv_window.py'] + sys.argv[1:])}`. {name}'s attention "
             f"({a.layers} layers, {widths}), fp16 cache, prefill batches "
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
