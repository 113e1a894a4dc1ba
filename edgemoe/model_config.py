"""The architecture-neutral model description stored in a container's manifest.

Converters map each source format's config onto these fields; the runtime
reads only these. Adding an architecture means mapping onto them (plus, at
most, a new flag here and in csrc/model/config.h), never a new forward pass.
"""
from __future__ import annotations

from typing import Any, Dict

from .errors import FormatError

ARCHITECTURES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")
QK_NORMS = ("none", "head", "full")  # none; RMSNorm per head (Qwen3); over the whole projection (OLMoE)

# field -> (type, lower bound, upper bound); bounds keep a hostile manifest
# from asking the runtime for absurd allocations.
_INT_FIELDS = {
    "n_layers": (1, 1024),
    "hidden": (1, 1 << 17),
    "n_heads": (1, 1024),
    "n_kv_heads": (1, 1024),
    "head_dim": (1, 4096),
    "vocab": (1, 1 << 22),
    "n_experts": (1, 4096),
    "top_k": (1, 4096),
    "expert_intermediate": (1, 1 << 18),
    "shared_intermediate": (0, 1 << 18),
    "max_position": (1, 1 << 24),
}
_FLOAT_FIELDS = {"rope_theta": (1e-3, 1e12), "rms_norm_eps": (0.0, 1.0)}
_BOOL_FIELDS = ("shared_gate", "qkv_bias", "norm_topk_prob", "tie_embeddings")


def validate_config(cfg: Any, where: str = "model") -> Dict[str, Any]:
    """Check a canonical config; raise FormatError naming the first bad field."""

    def bad(msg: str) -> FormatError:
        return FormatError(f"{where}: invalid model config: {msg}")

    if not isinstance(cfg, dict):
        raise bad("missing or not an object")
    arch = cfg.get("architecture")
    if arch not in ARCHITECTURES:
        raise bad(f"unsupported architecture {arch!r} (supported: {', '.join(ARCHITECTURES)})")
    for name, (lo, hi) in _INT_FIELDS.items():
        v = cfg.get(name)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise bad(f"{name} = {v!r} is not an integer in [{lo}, {hi}]")
    for name, (lo, hi) in _FLOAT_FIELDS.items():
        v = cfg.get(name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
            raise bad(f"{name} = {v!r} is not a number in [{lo}, {hi}]")
    for name in _BOOL_FIELDS:
        if not isinstance(cfg.get(name), bool):
            raise bad(f"{name} must be true or false")
    if cfg.get("qk_norm") not in QK_NORMS:
        raise bad(f"qk_norm must be one of {QK_NORMS}")
    if cfg["top_k"] > cfg["n_experts"]:
        raise bad(f"top_k {cfg['top_k']} exceeds n_experts {cfg['n_experts']}")
    if cfg["n_heads"] % cfg["n_kv_heads"]:
        raise bad(f"n_heads {cfg['n_heads']} is not a multiple of n_kv_heads {cfg['n_kv_heads']}")
    if cfg["head_dim"] % 2:
        raise bad(f"head_dim {cfg['head_dim']} must be even for rotary embeddings")
    if cfg["shared_gate"] and not cfg["shared_intermediate"]:
        raise bad("shared_gate set without a shared expert")
    eos = cfg.get("eos_token_ids", [])
    if not isinstance(eos, list) or not all(isinstance(t, int) and 0 <= t < cfg["vocab"] for t in eos):
        raise bad("eos_token_ids must be a list of token ids")
    return cfg
