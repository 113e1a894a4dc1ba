"""Rotary embedding settings of a transformers config, as the container's rope fields.

transformers 5 writes them as `rope_parameters` (theta and scaling together), transformers 4
as `rope_theta` plus `rope_scaling`; hub configs use either. The runtime computes the
frequencies (csrc/model/rope.cpp); this module only resolves the config's defaults the way
transformers' modeling_rope_utils.py does, so both read one set of numbers.
"""
from __future__ import annotations

import math
from typing import Any, Dict

from ..errors import UnsupportedModelError

SUPPORTED = ("default", "linear", "dynamic", "yarn")


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature 0.1 * mscale * ln(factor) + 1 (1 when not stretched)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope_parameters(hf: Dict[str, Any]) -> Dict[str, Any]:
    """The one rope dict of a config, whichever transformers version wrote it."""
    params = dict(hf.get("rope_scaling") or {})
    params.update(hf.get("rope_parameters") or {})
    params.setdefault("rope_type", params.get("type", "default"))
    params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    return params


def rope_config(hf: Dict[str, Any], arch: str, max_position: int) -> Dict[str, Any]:
    """Container fields for the rope settings of `hf`, plus the usable context (max_position):
    a stretched rope runs past the trained context by its factor."""
    p = rope_parameters(hf)
    kind = p["rope_type"]
    if kind not in SUPPORTED:
        raise UnsupportedModelError(f"{arch}: rope scaling of type {kind!r} is not supported "
                                    f"(supported: {', '.join(SUPPORTED)})")
    out: Dict[str, Any] = {"rope_theta": float(p["rope_theta"]), "max_position": max_position}
    if kind == "default":
        return out
    factor = p.get("factor")
    original = p.get("original_max_position_embeddings")
    if kind == "yarn":
        if not original:
            raise UnsupportedModelError(f"{arch}: yarn rope scaling without original_max_position_embeddings")
        if factor is None:  # DeepSeek-V3's configs: the ratio of the two contexts
            factor = max_position / original
        attention = p.get("attention_factor")
        if attention is None:
            mscale, mscale_all_dim = p.get("mscale"), p.get("mscale_all_dim")
            attention = (yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
                         if mscale and mscale_all_dim else yarn_mscale(factor))
        out.update(rope_original_max_position=int(original), rope_attention_factor=float(attention),
                   yarn_beta_fast=float(p.get("beta_fast") or 32), yarn_beta_slow=float(p.get("beta_slow") or 1),
                   yarn_truncate=bool(p.get("truncate", True)),
                   max_position=max(max_position, int(factor * original)))
    elif factor is None:
        raise UnsupportedModelError(f"{arch}: {kind} rope scaling without a factor")
    elif kind == "dynamic":
        # transformers stretches past max_position_embeddings itself
        out.update(rope_original_max_position=max_position, max_position=int(factor * max_position))
    elif original:  # linear
        out["max_position"] = max(max_position, int(factor * original))
    out.update(rope_scaling=kind, rope_factor=float(factor))
    return out
