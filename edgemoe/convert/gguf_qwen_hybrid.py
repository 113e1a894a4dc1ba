"""llama.cpp's qwen3next and qwen35moe GGUFs (docs/HYBRID_MODELS.md section 8) as the Hugging Face
config and tensors the Qwen3-Next / Qwen3.5 mapping (arch_qwen3_next.py) reads.

What llama.cpp's converter changed is undone here: its norms hold 1 + w (the mapping adds the 1
itself), ssm_a holds -exp(A_log), the convolution lost its middle axis, qwen3next's b and a rows
share one grouped ssm_ba, and qwen35moe's value heads are tiled (head t * key_heads + g holds
transformers' head g * r + t) where transformers groups them by key head.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ..errors import FormatError, UnsupportedModelError
from .arch_qwen3_next import SPLIT_PROJECTIONS

# llama.cpp's per-layer names -> transformers' (after "model.layers.{l}.")
LAYER_TENSORS = {
    "attn_qkv.weight": "linear_attn.in_proj_qkv.weight", "attn_gate.weight": "linear_attn.in_proj_z.weight",
    "ssm_beta.weight": "linear_attn.in_proj_b.weight", "ssm_alpha.weight": "linear_attn.in_proj_a.weight",
    "ssm_conv1d.weight": "linear_attn.conv1d.weight", "ssm_dt.bias": "linear_attn.dt_bias",
    "ssm_a": "linear_attn.A_log", "ssm_norm.weight": "linear_attn.norm.weight",
    "ssm_out.weight": "linear_attn.out_proj.weight",
}
# The multi-token-prediction head's own tensors (in the first NextN block) -> transformers' names.
NEXTN_TENSORS = {"nextn.eh_proj.weight": "mtp.fc.weight", "nextn.enorm.weight": "mtp.pre_fc_norm_embedding.weight",
                 "nextn.hnorm.weight": "mtp.pre_fc_norm_hidden.weight", "nextn.shared_head_norm.weight": "mtp.norm.weight"}
ONE_PLUS_NORMS = ("attn_norm.weight", "post_attention_norm.weight", "attn_q_norm.weight", "attn_k_norm.weight")
ARCHS = ("qwen3next", "qwen35moe")


def _count(ck, key: str, default: Optional[int] = None) -> int:
    """The GGUF's {arch}.{key} (default where given, else required), which must be a positive integer."""
    v = ck.field(f"{ck.arch_name}.{key}", default)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise FormatError(f"{ck.path}: GGUF metadata {ck.arch_name}.{key} = {v!r} is not a positive integer")
    return v


def hybrid_config(ck, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The transformers config fields of a qwen3next / qwen35moe GGUF."""
    a = ck.arch_name
    Nk, Nv, dk = _count(ck, "ssm.group_count"), _count(ck, "ssm.time_step_rank"), _count(ck, "ssm.state_size")
    inner = _count(ck, "ssm.inner_size")
    if inner % Nv:
        raise FormatError(f"{ck.path}: ssm.inner_size {inner} is not a multiple of ssm.time_step_rank {Nv}")
    n = ck.n_layers
    recurrent = ck.field(f"{a}.attention.recurrent_layers", [])
    if recurrent:
        if not isinstance(recurrent, list) or len(recurrent) < n:
            raise FormatError(f"{ck.path}: {a}.attention.recurrent_layers does not name each of the {n} layers")
        linear = [bool(recurrent[i]) for i in range(n)]
    else:
        interval = _count(ck, "full_attention_interval", default=4)
        linear = [(i + 1) % interval != 0 for i in range(n)]
    head_dim = cfg["head_dim"]
    rot = int(ck.field(f"{a}.rope.dimension_count", head_dim))
    return {
        "layer_types": ["linear_attention" if x else "full_attention" for x in linear],
        "linear_conv_kernel_dim": _count(ck, "ssm.conv_kernel"),
        "linear_num_key_heads": Nk, "linear_num_value_heads": Nv,
        "linear_key_head_dim": dk, "linear_value_head_dim": inner // Nv,
        "shared_expert_intermediate_size": int(ck.field(f"{a}.expert_shared_feed_forward_length", 0)),
        # (rot + 0.5) / head_dim: int(head_dim * factor) gives rot back whatever the float rounding
        "rope_parameters": {**(cfg.get("rope_parameters") or {"rope_type": "default", "rope_theta": cfg["rope_theta"]}),
                            "partial_rotary_factor": (rot + 0.5) / head_dim},
        "norm_topk_prob": True,  # llama.cpp renormalises the top-k of both
        SPLIT_PROJECTIONS: True,
    }


def hybrid_tensors(ck) -> Dict[str, Tuple[str, Callable[[np.ndarray], np.ndarray], Tuple[int, ...]]]:
    """{transformers name: (GGUF tensor, how its values become that tensor's, that tensor's shape)}
    for every tensor that is not the GGUF's as it is."""
    a = ck.arch_name
    derived = {}
    Nk, Nv = _count(ck, "ssm.group_count"), _count(ck, "ssm.time_step_rank")
    if Nv % Nk:
        raise FormatError(f"{ck.path}: ssm.time_step_rank {Nv} is not a multiple of ssm.group_count {Nk}")
    r = Nv // Nk
    # transformers' value head j is at the GGUF's head (j % r) * Nk + j // r where it tiles them
    heads = np.array([(j % r) * Nk + j // r for j in range(Nv)]) if a == "qwen35moe" else np.arange(Nv)
    key_dim = 2 * Nk * _count(ck, "ssm.state_size")

    def rows_per_head(w: np.ndarray, first: int = 0) -> np.ndarray:
        """w's rows from `first` on, Nv heads of equal size, in transformers' head order."""
        tail = w[first:].reshape(Nv, -1, *w.shape[1:])[heads].reshape(-1, *w.shape[1:])
        return np.concatenate([w[:first], tail]) if first else tail

    for gname in ck.tensors:
        parts = gname.split(".", 2)
        if len(parts) != 3 or parts[0] != "blk" or not parts[1].isdigit():
            continue
        layer, short = int(parts[1]), parts[2]
        base = f"model.layers.{layer}" if layer < ck.n_layers else f"mtp.layers.{layer - ck.n_layers}"
        shape = tuple(ck._dims(gname))
        if short in NEXTN_TENSORS and short != "nextn.eh_proj.weight":  # the head's norms: 1 + w too
            if layer == ck.n_layers:
                derived[NEXTN_TENSORS[short]] = (gname, lambda w: w - np.float32(1), shape)
        elif short in ONE_PLUS_NORMS:
            name = {"attn_norm.weight": "input_layernorm.weight",
                    "post_attention_norm.weight": "post_attention_layernorm.weight",
                    "attn_q_norm.weight": "self_attn.q_norm.weight",
                    "attn_k_norm.weight": "self_attn.k_norm.weight"}[short]
            derived[f"{base}.{name}"] = (gname, lambda w: w - np.float32(1), shape)
        elif short == "ssm_a":  # -exp(A_log)
            derived[f"{base}.linear_attn.A_log"] = (gname, lambda w: np.log(-w[heads].astype(np.float64)).astype(
                np.float32), shape)
        elif short == "ssm_conv1d.weight":  # [channels, taps]; transformers' has a middle axis of 1
            derived[f"{base}.linear_attn.conv1d.weight"] = (
                gname, lambda w: rows_per_head(w, key_dim)[:, None, :], (shape[0], 1, shape[1]))
        elif short in ("attn_qkv.weight",):
            derived[f"{base}.{LAYER_TENSORS[short]}"] = (gname, lambda w: rows_per_head(w, key_dim), shape)
        elif short in ("attn_gate.weight", "ssm_beta.weight", "ssm_alpha.weight", "ssm_dt.bias"):
            derived[f"{base}.{LAYER_TENSORS[short]}"] = (gname, rows_per_head, shape)
        elif short == "ssm_out.weight":  # its columns are the value heads
            derived[f"{base}.{LAYER_TENSORS[short]}"] = (
                gname, lambda w: w.reshape(w.shape[0], Nv, -1)[:, heads].reshape(w.shape), shape)
        elif short == "ssm_ba.weight":  # qwen3next: per key head, its r b rows then its r a rows
            if shape[0] != 2 * Nv:
                raise FormatError(f"{ck.path}: {gname} has {shape[0]} rows, expected {2 * Nv}")
            grouped = lambda w, i: w.reshape(Nk, 2, r, -1)[:, i].reshape(Nv, -1)  # noqa: E731
            derived[f"{base}.linear_attn.in_proj_b.weight"] = (gname, lambda w: grouped(w, 0), (Nv, shape[1]))
            derived[f"{base}.linear_attn.in_proj_a.weight"] = (gname, lambda w: grouped(w, 1), (Nv, shape[1]))
        elif short == "ssm_in.weight":
            raise UnsupportedModelError(f"{ck.path}: {gname} is llama.cpp's legacy fused qwen3next projection; "
                                        f"convert the model again with a current llama.cpp")
    if "output_norm.weight" in ck.tensors:
        derived["model.norm.weight"] = ("output_norm.weight", lambda w: w - np.float32(1),
                                        tuple(ck._dims("output_norm.weight")))
    return derived
