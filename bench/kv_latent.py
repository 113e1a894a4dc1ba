"""KV-cache bytes of latent attention (DeepSeek's MLA) against full K and V of the same heads, from
the memory plan's own formula (csrc/model/kv_cache.cpp), at several contexts.

    python bench/kv_latent.py [--write bench/RESULTS.md]

Shapes: DeepSeek-V2-Lite (27 layers, 16 heads) and DeepSeek-V3 / Kimi-K2's attention (61 layers,
128 heads), both kv_lora_rank 512, rope 64, nope 128, v 128. fp16 cache. Full K and V would keep
n_heads x (qk_nope + qk_rope) keys and n_heads x v values per position and layer, as a
non-absorbed implementation (transformers' expanded cache) does.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_util import report  # noqa: E402
from edgemoe import _core  # noqa: E402
from edgemoe.convert.hf import pick_arch  # noqa: E402
from edgemoe.format.model_config import validate_config  # noqa: E402

LATENT = {"kv_lora_rank": 512, "q_lora_rank": None, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
          "hidden_size": 2048, "vocab_size": 102400, "moe_intermediate_size": 1408, "intermediate_size": 10944,
          "n_routed_experts": 64, "num_experts_per_tok": 6, "n_shared_experts": 2, "first_k_dense_replace": 1,
          "max_position_embeddings": 163840}
MODELS = {
    "DeepSeek-V2-Lite": dict(LATENT, architectures=["DeepseekV2ForCausalLM"], num_hidden_layers=27,
                             num_attention_heads=16),
    "DeepSeek-V3 / Kimi-K2": dict(LATENT, architectures=["DeepseekV3ForCausalLM"], num_hidden_layers=61,
                                  num_attention_heads=128, q_lora_rank=1536, hidden_size=7168, n_group=8, topk_group=4,
                                  n_routed_experts=256, num_experts_per_tok=8, first_k_dense_replace=3),
}
CONTEXTS = (4096, 32768, 131072)
MiB = 1 << 20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", default=None)
    a = p.parse_args()
    lines = [f"\n### KV cache of latent attention (DeepSeek MLA) ({datetime.date.today()})\n",
             f"Command: `{' '.join(['python bench/kv_latent.py'] + sys.argv[1:])}`. fp16 cache, computed by the "
             "memory plan's formula, which the engine allocates (tests compare the two); full K and V: "
             "n_heads x (192 + 128) values per position and layer.\n",
             "| model | context | latent cache | full K and V | ratio | bytes per token of context |",
             "|---|---|---|---|---|---|"]
    for name, hf in MODELS.items():
        cfg = validate_config(pick_arch(hf).config(hf))
        full_per_token = 2 * cfg["n_layers"] * cfg["n_heads"] * (cfg["head_dim"] + cfg["v_head_dim"])
        for ctx in CONTEXTS:
            ours = _core.kv_cache_bytes(cfg, {"ctx_size": ctx, "max_batch": 256, "kv_cache": "f16"})
            full = full_per_token * ctx
            lines.append(f"| {name} | {ctx} | {ours / MiB:.0f} MiB | {full / MiB:.0f} MiB | {ours / full:.3f} | "
                         f"{ours / ctx / 1024:.1f} KiB (full: {full_per_token / 1024:.0f} KiB) |")
    report("\n".join(lines) + "\n", a.write)


if __name__ == "__main__":
    main()
