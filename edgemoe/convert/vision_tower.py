"""The vision tower of Qwen3-VL-MoE and Qwen3.5-MoE (docs/VISION_MODELS.md sections 1, 3 and 6) as
container fields and resident tensors, shared by both architectures' mappings.

The Conv3d patch embedding is stored as the matrix it is ([hidden, 3 * T * P * P], columns in the
processor's (channel, frame, y, x) order); every other tensor keeps its transformers layout. The
runtime (csrc/model/vision_tower.cpp) computes the tower; edgemoe/vision/ prepares its pixels.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np

from ..errors import UnsupportedModelError
from .arch_base import F32_ONLY, RESIDENT, Resident, positive_field
from .rope import rope_parameters

VISION_PREFIX = "model.visual."  # where transformers keeps the tower in a checkpoint
# The blocks' MLP width is stored padded with zeros to whole quantization groups (fc1's extra rows and
# biases 0, fc2's extra columns 0: the same outputs), so 8-bit resident weights take fc2 too
# (Qwen3-VL's 4304 is not a multiple of 32; f16 there cost a fifth of an image's encode time).
GROUP = 32
# transformers' vision blocks use the tanh GELU and a rotary base the runtime has fixed.
VISION_ACTIVATION, VISION_ROPE_THETA, IN_CHANNELS = "gelu_pytorch_tanh", 10000.0, 3


def has_vision(hf: Dict[str, Any]) -> bool:
    """A multimodal config (its checkpoint must then hold the tower)."""
    return isinstance(hf.get("vision_config"), dict)


def mrope_sections(text: Dict[str, Any], arch: str, rotary_pairs: int, default: List[int]) -> List[int]:
    """The [time, height, width] sections of the text model's multimodal rope, in rotary pairs
    (transformers falls back to the family's own when a config gives none)."""
    sections = rope_parameters(text).get("mrope_section", default)
    if (not isinstance(sections, list) or len(sections) != 3 or
            not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in sections)):
        raise UnsupportedModelError(f"{arch}: mrope_section must be 3 whole numbers, got {sections!r}")
    if sum(sections) != rotary_pairs:
        raise UnsupportedModelError(f"{arch}: mrope_section {sections} must sum to the {rotary_pairs} rotary pairs "
                                    "of a head")
    return sections


def vision_config(hf: Dict[str, Any], arch: str, text_hidden: int, deepstack: bool) -> Dict[str, Any]:
    """The container's vision_* fields and image token ids from a multimodal config. deepstack:
    whether the family has DeepStack mergers (Qwen3-VL; Qwen3.5's class has none)."""
    v = hf["vision_config"]
    if v.get("hidden_act", VISION_ACTIVATION) != VISION_ACTIVATION:
        raise UnsupportedModelError(f"{arch}: vision activation {v.get('hidden_act')!r} is not supported "
                                    f"(only {VISION_ACTIVATION})")
    if v.get("in_channels", IN_CHANNELS) != IN_CHANNELS:
        raise UnsupportedModelError(f"{arch}: vision in_channels must be {IN_CHANNELS}")
    theta = float(rope_parameters(v).get("rope_theta", VISION_ROPE_THETA))
    if theta != VISION_ROPE_THETA:
        raise UnsupportedModelError(f"{arch}: vision rope_theta {theta} is not supported (only {VISION_ROPE_THETA:g})")
    positions = positive_field(v, "num_position_embeddings", arch)
    side = math.isqrt(positions)
    if side * side != positions:
        raise UnsupportedModelError(f"{arch}: num_position_embeddings ({positions}) is not a square")
    if positive_field(v, "out_hidden_size", arch) != text_hidden:
        raise UnsupportedModelError(f"{arch}: vision out_hidden_size ({v['out_hidden_size']}) differs from the "
                                    f"text model's hidden size ({text_hidden})")
    layers = list(v.get("deepstack_visual_indexes") or []) if deepstack else []
    cfg = {
        "vision_depth": positive_field(v, "depth", arch),
        "vision_hidden": positive_field(v, "hidden_size", arch),
        "vision_intermediate": -(-positive_field(v, "intermediate_size", arch) // GROUP) * GROUP,
        "vision_heads": positive_field(v, "num_heads", arch),
        "vision_patch_size": positive_field(v, "patch_size", arch),
        "vision_temporal_patch": positive_field(v, "temporal_patch_size", arch),
        "vision_merge": positive_field(v, "spatial_merge_size", arch),
        "vision_position_side": side,
        "vision_deepstack_layers": layers,
    }
    for key in ("image_token_id", "vision_start_token_id", "vision_end_token_id"):
        value = hf.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UnsupportedModelError(f"{arch}: config.json's {key} must be a token id, got {value!r}")
        cfg[key] = value
    return cfg


def _merger(name: str, source: str, norm_width: int, width: int, hidden: int) -> List[Resident]:
    return [Resident(f"{name}.norm", f"{source}.norm.weight", (norm_width,), F32_ONLY),
            Resident(f"{name}.norm_bias", f"{source}.norm.bias", (norm_width,), F32_ONLY),
            Resident(f"{name}.fc1", f"{source}.linear_fc1.weight", (width, width), RESIDENT),
            Resident(f"{name}.fc1_bias", f"{source}.linear_fc1.bias", (width,), F32_ONLY),
            Resident(f"{name}.fc2", f"{source}.linear_fc2.weight", (hidden, width), RESIDENT),
            Resident(f"{name}.fc2_bias", f"{source}.linear_fc2.bias", (hidden,), F32_ONLY)]


def _pad_rows(n: int):
    return lambda w: np.concatenate([w, np.zeros((n - w.shape[0],) + w.shape[1:], w.dtype)]) if n > w.shape[0] else w


def _pad_cols(n: int):
    return lambda w: np.concatenate([w, np.zeros((w.shape[0], n - w.shape[1]), w.dtype)], 1) if n > w.shape[1] else w


def vision_residents(cfg: Dict[str, Any], hf: Dict[str, Any]) -> List[Resident]:
    """The tower's resident tensors (names as csrc/model/vision_tower.cpp binds them); hf: the
    source's config (the MLP width the checkpoint holds, before padding)."""
    D, I, H = cfg["vision_hidden"], hf["vision_config"]["intermediate_size"], cfg["hidden"]
    padded = cfg["vision_intermediate"]
    T, P, m = cfg["vision_temporal_patch"], cfg["vision_patch_size"], cfg["vision_merge"]
    M, side, v = D * m * m, cfg["vision_position_side"], VISION_PREFIX
    plan = [Resident("vision.patch_embed", f"{v}patch_embed.proj.weight", (D, IN_CHANNELS, T, P, P), RESIDENT,
                     lambda w: w.reshape(w.shape[0], -1)),
            Resident("vision.patch_bias", f"{v}patch_embed.proj.bias", (D,), F32_ONLY),
            Resident("vision.position_table", f"{v}pos_embed.weight", (side * side, D), F32_ONLY)]
    for b in range(cfg["vision_depth"]):
        s, c = f"{v}blocks.{b}", f"vision.blocks.{b}"
        plan += [Resident(f"{c}.{name}", f"{s}.{source}", shape, kind) for name, source, shape, kind in (
            ("norm1", "norm1.weight", (D,), F32_ONLY), ("norm1_bias", "norm1.bias", (D,), F32_ONLY),
            ("qkv", "attn.qkv.weight", (3 * D, D), RESIDENT), ("qkv_bias", "attn.qkv.bias", (3 * D,), F32_ONLY),
            ("proj", "attn.proj.weight", (D, D), RESIDENT), ("proj_bias", "attn.proj.bias", (D,), F32_ONLY),
            ("norm2", "norm2.weight", (D,), F32_ONLY), ("norm2_bias", "norm2.bias", (D,), F32_ONLY),
            ("fc2_bias", "mlp.linear_fc2.bias", (D,), F32_ONLY))]
        plan += [Resident(f"{c}.fc1", f"{s}.mlp.linear_fc1.weight", (I, D), RESIDENT, _pad_rows(padded)),
                 Resident(f"{c}.fc1_bias", f"{s}.mlp.linear_fc1.bias", (I,), F32_ONLY, _pad_rows(padded)),
                 Resident(f"{c}.fc2", f"{s}.mlp.linear_fc2.weight", (D, I), RESIDENT, _pad_cols(padded))]
    plan += _merger("vision.merger", f"{v}merger", D, M, H)  # its norm: each patch, before they go side by side
    for k in range(len(cfg["vision_deepstack_layers"])):  # theirs: the side-by-side patches
        plan += _merger(f"vision.deepstack.{k}", f"{v}deepstack_merger_list.{k}", M, M, H)
    return plan
