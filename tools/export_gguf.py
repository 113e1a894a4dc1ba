#!/usr/bin/env python3
"""Write a Hugging Face MoE folder as a GGUF file that llama.cpp loads: the same
weights this project converts, for side-by-side benchmarks and parity checks.

    python tools/export_gguf.py SRC_FOLDER -o model-f32.gguf [--type f32|f16]
        [--quantize q8_0 --quantize q4_0 ...]

Reads the checkpoint through edgemoe's converter (same architecture mappings,
both expert layouts), renames tensors to llama.cpp's names, stacks the routed
experts into `ffn_{gate,up,down}_exps` and writes the tokenizer (byte-level
BPE) as GGUF vocab + merges. `--quantize` then asks llama.cpp itself (through
llama-cpp-python's llama_model_quantize) for Q8_0 / Q4_0 / Q4_1 copies named
after the output (model-q8_0.gguf, ...). Needs the `gguf` package, and
llama-cpp-python for --quantize (`pip install -e ".[bench]"`).

Architectures: OLMoE (`olmoe`), Qwen3-MoE (`qwen3moe`), Qwen2-MoE (`qwen2moe`)
and Mixtral (`llama` with experts; q/k rows permuted to llama.cpp's rotary
layout, as its own converter does), gpt-oss (`gpt-oss`), GLM-4.5 MoE (`glm4moe`)
DeepSeek-V2/V3 (`deepseek2`: latent attention with kv_b split into k_b and v_b
as llama.cpp's converter writes them, rotary pairs interleaved as the checkpoint has them) and
Gemma 4 MoE (`gemma4`: the vocabulary stays byte-level BPE, not llama.cpp's gemma4 tokenizer),
Qwen3-Next (`qwen3next`) and Qwen3.5-MoE (`qwen35moe`: value heads tiled as llama.cpp's converter
orders them; either can be written from a Qwen3.5 folder, whose layers are Qwen3-Next's).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from edgemoe.format.model_config import moe_layers, validate_config  # noqa: E402
from edgemoe.convert.hf import (ExpertReader, _eos_ids, _read_json, _tokenizer_section, moe_prefix,  # noqa: E402
                                pick_arch, resident_plan)
from edgemoe.convert.safetensors_reader import Checkpoint  # noqa: E402
from edgemoe.errors import UnsupportedModelError  # noqa: E402
from edgemoe.format import quant  # noqa: E402

GGUF_ARCH = {"olmoe": "olmoe", "qwen3_moe": "qwen3moe", "qwen2_moe": "qwen2moe", "mixtral": "llama", "gpt_oss": "gpt-oss",
             "glm4_moe": "glm4moe", "deepseek_v2": "deepseek2", "deepseek_v3": "deepseek2", "gemma4": "gemma4",
             "qwen3_next": "qwen3next", "qwen3_5_moe": "qwen35moe", "qwen3_vl_moe": "qwen3vlmoe"}
HYBRIDS = ("qwen3next", "qwen35moe")
# our resident name (after "layers.{l}.") -> llama.cpp's
LAYER_NAMES = {
    "attn_norm": "attn_norm.weight", "wq": "attn_q.weight", "wk": "attn_k.weight", "wv": "attn_v.weight",
    "wo": "attn_output.weight", "ffn_norm": "ffn_norm.weight", "router": "ffn_gate_inp.weight",
    "q_norm": "attn_q_norm.weight", "k_norm": "attn_k_norm.weight",
    "bq": "attn_q.bias", "bk": "attn_k.bias", "bv": "attn_v.bias",
    "shared_gate_proj": "ffn_gate_shexp.weight", "shared_up_proj": "ffn_up_shexp.weight",
    "shared_down_proj": "ffn_down_shexp.weight", "shared_expert_gate": "ffn_gate_inp_shexp.weight",
    "bo": "attn_output.bias", "sinks": "attn_sinks.weight", "router_bias": "ffn_gate_inp.bias",
    "expert_gate_bias": "ffn_gate_exps.bias", "expert_up_bias": "ffn_up_exps.bias",
    "expert_down_bias": "ffn_down_exps.bias",
    "dense_gate": "ffn_gate.weight", "dense_up": "ffn_up.weight", "dense_down": "ffn_down.weight",
    "router_correction_bias": "exp_probs_b.bias",
    "wq_a": "attn_q_a.weight", "q_a_norm": "attn_q_a_norm.weight", "wq_b": "attn_q_b.weight",
    "wkv_a": "attn_kv_a_mqa.weight", "kv_a_norm": "attn_kv_a_norm.weight",
    "wk_b": "attn_k_b.weight", "wv_b": "attn_v_b.weight",
    "lin_qkv": "attn_qkv.weight", "lin_z": "attn_gate.weight", "lin_b": "ssm_beta.weight",
    "lin_a": "ssm_alpha.weight", "lin_conv": "ssm_conv1d.weight", "lin_dt_bias": "ssm_dt.bias",
    "lin_decay_rate": "ssm_a", "lin_norm": "ssm_norm.weight", "lin_out": "ssm_out.weight",
}
# llama.cpp's gpt-oss names the post-attention norm after the attention, not the FFN
ARCH_LAYER_NAMES = {"gpt-oss": {"ffn_norm": "post_attention_norm.weight"},
                    "glm4moe": {"ffn_norm": "post_attention_norm.weight"},
                    # Gemma 4's MLP beside the experts is llama.cpp's plain ffn; router_norm is written as
                    # the router's raw scale (llama.cpp divides by sqrt(hidden) itself)
                    "gemma4": {"shared_gate_proj": "ffn_gate.weight", "shared_up_proj": "ffn_up.weight",
                               "shared_down_proj": "ffn_down.weight", "post_attn_norm": "post_attention_norm.weight",
                               "post_ffn_norm": "post_ffw_norm.weight", "post_ffn_norm_1": "post_ffw_norm_1.weight",
                               "ffn_norm_2": "pre_ffw_norm_2.weight", "post_ffn_norm_2": "post_ffw_norm_2.weight",
                               "router_norm": "ffn_gate_inp.scale", "router_expert_scale": "ffn_down_exps.scale",
                               "layer_scale": "layer_output_scale.weight"},
                    "qwen3next": {"ffn_norm": "post_attention_norm.weight"},
                    "qwen35moe": {"ffn_norm": "post_attention_norm.weight"}}
TOP_NAMES = {"tok_embeddings": "token_embd.weight", "norm": "output_norm.weight", "output": "output.weight"}
# llama.cpp's LLAMA_FTYPE_MOSTLY_*; mxfp4_moe: experts MXFP4, the rest Q8_0 (how gpt-oss GGUFs ship)
QUANT_FTYPES = {"q8_0": 7, "q4_0": 2, "q4_1": 3, "q4_k_m": 15, "q6_k": 18, "mxfp4_moe": 38}


def gguf_name(ours: str, arch: str = "") -> str:
    if ours in TOP_NAMES:
        return TOP_NAMES[ours]
    _, layer, short = ours.split(".", 2)
    own = ARCH_LAYER_NAMES.get(arch, {})
    return f"blk.{layer}.{own[short] if short in own else LAYER_NAMES[short]}"


def permute_for_llama_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """transformers rotates halves of each head; llama.cpp's `llama` rotates adjacent pairs."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def interleave(rows: np.ndarray) -> np.ndarray:
    """The inverse of the converter's deinterleave: half-split rotary rows back to adjacent pairs."""
    out = np.empty_like(rows)
    out[0::2], out[1::2] = rows[:len(rows) // 2], rows[len(rows) // 2:]
    return out


def deepseek2_layout(ours: str, t: np.ndarray, cfg: Dict) -> np.ndarray:
    """Our latent-attention tensor as llama.cpp's deepseek2 reads it: rotary rows in adjacent pairs
    (the checkpoint's order), k_b [heads, kv_lora, nope] and v_b [heads, v, kv_lora] 3-D."""
    heads, R, rope = cfg["n_heads"], cfg["kv_lora_rank"], cfg["qk_rope_head_dim"]
    nope = cfg["head_dim"] - rope
    if ours.endswith((".wq", ".wq_b")):
        per = t.reshape(heads, nope + rope, -1)
        return np.concatenate([np.concatenate([h[:nope], interleave(h[nope:])]) for h in per])
    if ours.endswith(".wkv_a"):
        return np.concatenate([t[:R], interleave(t[R:])])
    if ours.endswith(".wk_b"):
        return t.reshape(heads, R, nope)
    if ours.endswith(".wv_b"):
        return t.reshape(heads, cfg["v_head_dim"], R)
    return t


def add_moe_keys(w, cfg: Dict, hf: Dict, src: str) -> None:
    """The keys of glm4moe's and deepseek2's MoE (llama.cpp's names), and deepseek2's latent attention."""
    import gguf

    from edgemoe.convert.rope import rope_parameters

    dense = cfg["dense_layers"]
    if cfg["group_score"] != "top2_sum":
        raise UnsupportedModelError(f"{src}: llama.cpp scores expert groups by their best two only")
    if dense != list(range(len(dense))):
        raise UnsupportedModelError(f"{src}: llama.cpp's dense layers are the leading ones, not {dense}")
    w.add_leading_dense_block_count(len(dense))
    w.add_expert_shared_count(cfg["shared_intermediate"] // cfg["expert_intermediate"])
    w.add_expert_weights_scale(cfg["routed_scaling_factor"])
    w.add_expert_weights_norm(bool(cfg["norm_topk_prob"]))
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID if cfg["routing"] == "sigmoid"
                             else gguf.ExpertGatingFuncType.SOFTMAX)
    if cfg["n_group"] > 1:
        w.add_expert_group_count(cfg["n_group"])
        w.add_expert_group_used_count(cfg["topk_group"])
    if not cfg["kv_lora_rank"]:
        return
    R = cfg["kv_lora_rank"]
    w.add_q_lora_rank(cfg["q_lora_rank"])  # 0: attn_q (llama.cpp requires the key)
    w.add_kv_lora_rank(R)
    w.add_key_length_mla(cfg["head_dim"])
    w.add_value_length_mla(cfg["v_head_dim"])
    p = rope_parameters(hf)
    if p["rope_type"] == "yarn":
        # llama.cpp's deepseek2 reads one mscale (0.1 x mscale_all_dim) for cos/sin and the softmax
        if p.get("mscale") != p.get("mscale_all_dim") or not p.get("mscale_all_dim"):
            raise UnsupportedModelError(f"{src}: llama.cpp's deepseek2 YaRN needs mscale == mscale_all_dim")
        w.add_rope_scaling_yarn_log_mul(0.1 * p["mscale_all_dim"])


def add_gemma4_keys(w, cfg: Dict, hf: Dict) -> None:
    """gemma4's attention keys as llama.cpp's converter writes them: per-layer sliding pattern and
    KV heads, the global layers' widths as key_length (the sliding ones' as *_swa), their rope
    over the whole head (rope_freqs marks the dims that do not turn), the two rope bases."""
    n = cfg["n_layers"]
    sliding = [l in cfg["sliding_layers"] for l in range(n)]
    w.add_sliding_window(cfg["sliding_window"])
    w.add_sliding_window_pattern(sliding)
    w.add_head_count_kv([cfg["n_kv_heads"] if s else cfg["global_kv_heads"] for s in sliding])
    w.add_key_length(cfg["global_head_dim"])
    w.add_value_length(cfg["global_head_dim"])
    w.add_key_length_swa(cfg["head_dim"])
    w.add_value_length_swa(cfg["head_dim"])
    w.add_rope_dimension_count(cfg["global_head_dim"])
    w.add_rope_dimension_count_swa(cfg["head_dim"])
    w.add_rope_freq_base(cfg["global_rope_theta"])
    w.add_rope_freq_base_swa(cfg["rope_theta"])
    w.add_embedding_length_per_layer_input(0)
    w.add_shared_kv_layers(0)
    if cfg["final_logit_softcap"]:
        w.add_final_logit_softcapping(cfg["final_logit_softcap"])


def gemma4_rope_freqs(cfg: Dict) -> np.ndarray:
    """llama.cpp's proportional rope: frequency factors 1 for the pairs that turn, 1e30 (no turn) beyond."""
    half = cfg["global_head_dim"] // 2
    angles = cfg["global_rope_angles"] or half
    return np.array([1.0] * angles + [1e30] * (half - angles), dtype=np.float32)


def mtp_name(ours: str, n_layers: int) -> str:
    """Our name of a multi-token-prediction tensor as the exporter handles it: the head's own as
    llama.cpp's nextn names in the first NextN block, its layers' as layers.{n_layers + i}.*."""
    own = {"mtp.fc": "nextn.eh_proj.weight", "mtp.norm_embedding": "nextn.enorm.weight",
           "mtp.norm_hidden": "nextn.hnorm.weight", "mtp.norm": "nextn.shared_head_norm.weight"}
    if ours in own:
        return f"blk.{n_layers}.{own[ours]}"
    _, _, i, short = ours.split(".", 3)  # mtp.layers.{i}.{short}
    return f"layers.{n_layers + int(i)}.{short}"


def add_hybrid_keys(w, cfg: Dict, hf: Dict, name: str, src: str, nextn: int = 0) -> None:
    """qwen3next's and qwen35moe's linear-attention keys as llama.cpp's converter writes them."""
    from edgemoe.convert.rope import rope_parameters

    if cfg["linear_key_head_dim"] != cfg["linear_value_head_dim"]:
        raise UnsupportedModelError(f"{src}: llama.cpp's {name} needs linear_key_head_dim == linear_value_head_dim")
    if cfg["dense_layers"]:
        raise UnsupportedModelError(f"{src}: llama.cpp's {name} has no dense layers")
    if not cfg["norm_topk_prob"]:
        raise UnsupportedModelError(f"{src}: llama.cpp's {name} always renormalises the top-k routing weights")
    if cfg["rms_norm_eps"] != 1e-6:
        # llama.cpp's l2norm of q and k uses rms_norm_eps, transformers' a fixed 1e-6
        raise UnsupportedModelError(f"{src}: llama.cpp's {name} would l2-normalise q and k with eps "
                                    f"{cfg['rms_norm_eps']} where transformers uses 1e-6")
    w.add_ssm_conv_kernel(cfg["linear_conv_kernel"])
    w.add_ssm_state_size(cfg["linear_key_head_dim"])
    w.add_ssm_group_count(cfg["linear_key_heads"])
    w.add_ssm_time_step_rank(cfg["linear_value_heads"])
    w.add_ssm_inner_size(cfg["linear_value_heads"] * cfg["linear_value_head_dim"])
    w.add_array(f"{name}.attention.recurrent_layers",
                [l in cfg["linear_layers"] for l in range(cfg["n_layers"])] + [False] * nextn)
    if name == "qwen35moe":
        sections = list(rope_parameters(hf.get("text_config") or hf).get("mrope_section") or [11, 11, 10])
        w.add_rope_dimension_sections(sections + [0] * (4 - len(sections)))


def tile_value_heads(ours: str, t: np.ndarray, cfg: Dict) -> np.ndarray:
    """qwen35moe's value-head order: llama.cpp's converter moves value head g * r + t (grouped by key
    head, transformers' order) to t * key_heads + g (tiled)."""
    Nk, Nv, dv = cfg["linear_key_heads"], cfg["linear_value_heads"], cfg["linear_value_head_dim"]
    r = Nv // Nk
    order = np.array([g * r + t for t in range(r) for g in range(Nk)])  # new head -> old head
    short = ours.split(".", 2)[-1]
    if short in ("lin_b", "lin_a", "lin_dt_bias", "lin_decay_rate"):
        return t[order]
    if short == "lin_z":
        return t.reshape(Nv, dv, -1)[order].reshape(t.shape)
    if short in ("lin_qkv", "lin_conv"):
        KD = 2 * cfg["linear_key_heads"] * cfg["linear_key_head_dim"]
        return np.concatenate([t[:KD], t[KD:].reshape(Nv, dv, -1)[order].reshape(-1, t.shape[1])])
    if short == "lin_out":
        return t.reshape(t.shape[0], Nv, dv)[:, order].reshape(t.shape)
    return t


def add_tokenizer(writer, tokenizer_json: Dict, vocab_size: int, eos_ids: List[int], pre: str = "default") -> None:
    import gguf

    model = tokenizer_json["model"]
    if model.get("type") != "BPE":
        raise UnsupportedModelError(f"tokenizer type {model.get('type')!r}: only byte-level BPE is exported")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [gguf.TokenType.UNUSED] * vocab_size
    for text, i in model["vocab"].items():
        if i < vocab_size:
            tokens[i], types[i] = text, gguf.TokenType.NORMAL
    for added in tokenizer_json.get("added_tokens", []):
        if added["id"] < vocab_size:
            tokens[added["id"]] = added["content"]
            types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if eos_ids:
        writer.add_eos_token_id(eos_ids[0])
    writer.add_add_bos_token(False)


def add_gemma4_tokenizer(writer, tokenizer_json: Dict, vocab_size: int, bos: int) -> None:
    """A U+2581-escaped BPE over raw UTF-8 as llama.cpp's gemma4 tokenizer type: pieces, their
    types (<0xXX> byte tokens, control tokens) and merges."""
    import gguf

    model = tokenizer_json["model"]
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [gguf.TokenType.UNUSED] * vocab_size
    for text, i in model["vocab"].items():
        if i < vocab_size:
            tokens[i] = text
            is_byte = len(text) == 6 and text.startswith("<0x") and text.endswith(">")
            types[i] = gguf.TokenType.BYTE if is_byte else gguf.TokenType.NORMAL
    for added in tokenizer_json.get("added_tokens", []):
        if added["id"] < vocab_size:
            tokens[added["id"]] = added["content"]
            types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    writer.add_tokenizer_model("gemma4")
    writer.add_tokenizer_pre("gemma4")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])])
    writer.add_bos_token_id(bos)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)


def add_spm_tokenizer(writer, vocab) -> None:
    """A SentencePiece vocabulary ("llama"): pieces, scores and token types."""
    writer.add_tokenizer_model("llama")
    writer.add_token_list([p for p, _, _ in vocab])
    writer.add_token_scores([float(s) for _, s, _ in vocab])
    writer.add_token_types([int(t) for _, _, t in vocab])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)


def export(src: str, out: str, out_type: str = "f32", tokenizer_pre: str = "default",
           experts_mxfp4: bool = False, spm_vocab=None, nextn: int = 0, gemma4_bos: Optional[int] = None,
           gguf_arch: Optional[str] = None) -> Dict:
    """Write the checkpoint `src` as a GGUF; tokenizer_pre names llama.cpp's pre-tokenizer type
    for the vocabulary ("default": GPT-2's split, "qwen2": Qwen2's). experts_mxfp4: keep the
    checkpoint's own MXFP4 expert blocks (gpt-oss from the hub), as llama.cpp's converter does.
    spm_vocab: [(piece, score, token type)] written as a SentencePiece vocabulary instead of the
    folder's tokenizer (<unk>, <s>, </s> at ids 0, 1, 2 as llama.cpp assumes). nextn: append that
    many copies of the last layer as multi-token-prediction blocks (nextn_predict_layers), where
    llama.cpp's converter puts GLM-4.5's and DeepSeek's MTP layers; neither engine runs them.
    gemma4_bos: write the folder's tokenizer (a U+2581-escaped BPE) as llama.cpp's gemma4 type,
    with that BOS id. gguf_arch: "qwen3next" writes a Qwen3.5 folder as llama.cpp's qwen3next (the
    same layers; llama.cpp renormalises both's top-k)."""
    import gguf

    hf = _read_json(os.path.join(src, "config.json"), required=True)
    arch = pick_arch(hf)
    cfg = validate_config(arch.config(hf), src)
    if arch.name not in GGUF_ARCH:
        raise UnsupportedModelError(f"{arch.name}: no GGUF export mapping")
    if arch.name == "olmoe" and cfg["n_kv_heads"] != cfg["n_heads"]:
        # llama.cpp's olmoe graph normalises k over n_embd: it has no grouped-query attention
        raise UnsupportedModelError(f"{src}: llama.cpp's OLMoE needs as many key/value heads as query heads "
                                    f"({cfg['n_kv_heads']} vs {cfg['n_heads']})")
    tok = _tokenizer_section(src, hf)
    ckpt = arch.checkpoint_view(Checkpoint(src))
    moe = moe_prefix(ckpt, arch, cfg)
    dtype = np.float32 if out_type == "f32" else np.float16
    name = GGUF_ARCH[arch.name]
    if gguf_arch is not None:
        if gguf_arch != name and {name, gguf_arch} != set(HYBRIDS):
            raise UnsupportedModelError(f"{src}: {arch.name} is not written as {gguf_arch}")
        name = gguf_arch

    w = gguf.GGUFWriter(out + ".partial", name)
    w.add_name(os.path.basename(os.path.normpath(src)))
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if out_type == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_context_length(int(hf.get("max_position_embeddings", 4096)))
    w.add_embedding_length(cfg["hidden"])
    from edgemoe import _core

    plan = resident_plan(cfg, arch, moe, ckpt, hf)
    kept = _core.KEPT_FOR_LATER_PREFIX
    # a hybrid's multi-token-prediction head (mtp.*) becomes llama.cpp's NextN blocks after the layers
    mtp_layers = len({r.name.split(".")[2] for r in plan if r.name.startswith(kept + "layers.")}) \
        if name in HYBRIDS else 0
    nextn = nextn or mtp_layers
    w.add_block_count(cfg["n_layers"] + nextn)
    if nextn:
        w.add_nextn_predict_layers(nextn)
    last = f"blk.{cfg['n_layers'] - 1}."
    last_layer = []  # (name after "blk.N.", array, kwargs): copied into the NextN blocks

    def add(gname: str, t: np.ndarray, **kwargs) -> None:
        w.add_tensor(gname, t, **kwargs)
        if gname.startswith(last):
            last_layer.append((gname[len(last):], t, kwargs))
    w.add_head_count(cfg["n_heads"])
    latent = bool(cfg["kv_lora_rank"])
    if name == "gemma4":
        add_gemma4_keys(w, cfg, hf)
    else:
        # deepseek2's latent attention is one key/value head of the cached row (llama.cpp's MQA view)
        w.add_head_count_kv(1 if latent else cfg["n_kv_heads"])
        w.add_key_length(cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"] if latent else cfg["head_dim"])
        w.add_value_length(cfg["kv_lora_rank"] if latent else cfg["head_dim"])
        w.add_rope_dimension_count(cfg["qk_rope_head_dim"] if latent else cfg["rotary_dim"] or cfg["head_dim"])
        w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_expert_count(cfg["n_experts"])
    w.add_expert_used_count(cfg["top_k"])
    w.add_feed_forward_length(cfg["dense_intermediate"] or (cfg["shared_intermediate"] if name == "gemma4" else 0)
                              or cfg["expert_intermediate"])
    w.add_expert_feed_forward_length(cfg["expert_intermediate"])
    if cfg["shared_intermediate"] and name != "gemma4":
        w.add_expert_shared_feed_forward_length(cfg["shared_intermediate"])
    if name in ("qwen3moe", "qwen2moe", "llama", "qwen3vlmoe"):
        w.add_expert_weights_norm(bool(cfg["norm_topk_prob"]))
    if cfg.get("mrope_sections"):  # (a vision tower goes to an mmproj file: tools/export_mmproj.py)
        w.add_rope_dimension_sections(list(cfg["mrope_sections"]) + [0])
    if name == "qwen3vlmoe":
        w.add_uint32(f"{name}.n_deepstack_layers", len(cfg.get("vision_deepstack_layers", [])))
    if name in ("glm4moe", "deepseek2"):
        add_moe_keys(w, cfg, hf, src)
    if cfg.get("sliding_window") and name != "gemma4":
        w.add_sliding_window(cfg["sliding_window"])
        sliding = set(cfg["sliding_layers"])
        if [l in sliding for l in range(cfg["n_layers"])] != [l % 2 == 0 for l in range(cfg["n_layers"])]:
            raise UnsupportedModelError(f"{src}: llama.cpp reads gpt-oss's sliding layers as every other one")
    if cfg.get("rope_scaling", "none") == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(cfg["rope_factor"])
        w.add_rope_scaling_orig_ctx_len(cfg["rope_original_max_position"])
    elif cfg.get("rope_scaling", "none") != "none":
        raise UnsupportedModelError(f"{src}: rope scaling {cfg['rope_scaling']!r} is not exported")
    w.add_vocab_size(cfg["vocab"])
    if spm_vocab is not None:
        if len(spm_vocab) != cfg["vocab"]:
            raise UnsupportedModelError(f"{src}: the SentencePiece vocabulary has {len(spm_vocab)} pieces, "
                                        f"the model {cfg['vocab']}")
        add_spm_tokenizer(w, spm_vocab)
    elif "tokenizer_json" not in tok:
        raise UnsupportedModelError(f"{src}: no tokenizer.json to export")
    elif gemma4_bos is not None:
        add_gemma4_tokenizer(w, json.loads(tok["tokenizer_json"]), cfg["vocab"], gemma4_bos)
    else:
        add_tokenizer(w, json.loads(tok["tokenizer_json"]), cfg["vocab"],
                      _eos_ids(hf, tok["generation_config"], cfg["vocab"]), tokenizer_pre)

    if name in HYBRIDS:
        add_hybrid_keys(w, cfg, hf, name, src, nextn)
    held = {}  # hybrids: a full-attention layer's wq, written with its wq_gate as one attn_q
    mtp_experts = {}  # (NextN block, part) -> {expert: array}, stacked after the loop

    for r in plan:
        ours = r.name
        if ours.startswith("vision."):  # a vision tower is llama.cpp's mmproj file, not the model's
            continue
        if ours.startswith(kept):
            if not mtp_layers:
                continue
            ours = mtp_name(ours, cfg["n_layers"])
        if r.index is None:
            t = np.asarray(ckpt.get(r.source), dtype=np.float32).reshape(r.shape)
        else:
            t = np.asarray(ckpt.get(r.source, r.index), dtype=np.float32)
        if r.take is not None and not (name == "gemma4" and ours.endswith(".router_norm")):
            t = np.ascontiguousarray(r.take(t))
        if ".experts." in ours:  # a NextN block's expert, e.g. layers.4.experts.3.up
            _, block, _, e, part = ours.split(".")
            mtp_experts.setdefault((int(block), part), {})[int(e)] = t
            continue
        if ours.startswith("blk."):  # a NextN block's own tensor, named already
            add(ours, t if t.ndim == 1 else t.astype(dtype))
            continue
        if name == "qwen35moe":
            t = tile_value_heads(ours, t, cfg)
        if name in HYBRIDS and ours.endswith(".wq"):
            held[ours] = t
            continue
        if name in HYBRIDS and ours.endswith(".wq_gate"):  # each head's query rows, then its gate rows
            q, hd = held.pop(ours[:-len("_gate")]), cfg["head_dim"]
            t, ours = np.stack([q.reshape(-1, hd, q.shape[1]), t.reshape(-1, hd, t.shape[1])], 1).reshape(-1, q.shape[1]), \
                ours[:-len("_gate")]
        if name == "qwen3next" and ours.endswith((".lin_b", ".lin_a")):  # one ssm_ba, grouped by key head
            held[ours] = t
            if not ours.endswith(".lin_a"):
                continue
            b, a = held.pop(ours[:-1] + "b"), held.pop(ours)
            groups = cfg["linear_key_heads"]
            t = np.concatenate([b.reshape(groups, -1, b.shape[1]), a.reshape(groups, -1, a.shape[1])], 1)
            add(f"blk.{ours.split('.')[1]}.ssm_ba.weight", t.reshape(-1, b.shape[1]).astype(dtype))
            continue
        if name == "deepseek2":
            t = deepseek2_layout(ours, t, cfg)
        if name == "llama" and ours.endswith((".wq", ".bq")):
            t = permute_for_llama_rope(t, cfg["n_heads"])
        elif name == "llama" and ours.endswith((".wk", ".bk")):
            t = permute_for_llama_rope(t, cfg["n_kv_heads"])
        # norms, biases and routers stay f32, as llama.cpp's own converter keeps 1-D tensors
        keep_f32 = t.ndim == 1 or ours.endswith((".router", "_bias", ".lin_conv"))
        add(gguf_name(ours, name), t if keep_f32 else t.astype(dtype))
    if name == "gemma4":
        add("rope_freqs.weight", gemma4_rope_freqs(cfg))
    experts = ExpertReader(ckpt, cfg, arch, moe)
    for l in moe_layers(cfg):
        if experts_mxfp4:
            blocks = [experts.native(l, e, quant.MXFP4) for e in range(cfg["n_experts"])]
            if any(b is None for b in blocks):
                raise UnsupportedModelError(f"{src}: its experts are not MXFP4 blocks")
            for part in ("gate", "up", "down"):
                raw = np.stack([np.ascontiguousarray(b[part]).view(np.uint8) for b in blocks])
                add(f"blk.{l}.ffn_{part}_exps.weight", raw, raw_dtype=gguf.GGMLQuantizationType.MXFP4)
            continue
        parts = [experts.read(l, e) for e in range(cfg["n_experts"])]
        if name == "gemma4":  # gate and up fused, gate rows first, as llama.cpp's converter writes them
            add(f"blk.{l}.ffn_gate_up_exps.weight",
                np.stack([np.concatenate([p["gate"], p["up"]]) for p in parts]).astype(dtype))
            add(f"blk.{l}.ffn_down_exps.weight", np.stack([p["down"] for p in parts]).astype(dtype))
            continue
        for part in ("gate", "up", "down"):
            stacked = np.stack([np.asarray(p[part], dtype=np.float32) for p in parts]).astype(dtype)
            add(f"blk.{l}.ffn_{part}_exps.weight", stacked)
    for (block, part), by_expert in sorted(mtp_experts.items()):
        add(f"blk.{block}.ffn_{part}_exps.weight", np.stack([by_expert[e] for e in sorted(by_expert)]).astype(dtype))
    for k in range(nextn if not mtp_layers else 0):
        for short, t, kwargs in last_layer:
            w.add_tensor(f"blk.{cfg['n_layers'] + k}.{short}", t, **kwargs)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(out + ".partial", out)
    return cfg


def quantize(src_gguf: str, out: str, kind: str, threads: int = 0) -> None:
    """Quantize with llama.cpp's own quantizer (llama-cpp-python)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_FTYPES[kind]
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(src_gguf.encode(), (out + ".partial").encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({kind}) failed with code {rc}")
    os.replace(out + ".partial", out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="Hugging Face model folder")
    p.add_argument("-o", "--out", required=True, help="output .gguf")
    p.add_argument("--type", choices=["f32", "f16"], default="f32")
    p.add_argument("--experts-mxfp4", action="store_true",
                   help="keep the checkpoint's MXFP4 expert blocks (gpt-oss from the hub) instead of --type")
    p.add_argument("--quantize", action="append", choices=sorted(QUANT_FTYPES), default=[],
                   help="also write a copy quantized by llama.cpp (repeatable)")
    a = p.parse_args()
    export(a.src, a.out, a.type, experts_mxfp4=a.experts_mxfp4)
    print(f"wrote {a.out}")
    stem = a.out[:-5] if a.out.endswith(".gguf") else a.out
    stem = stem.rsplit("-", 1)[0] if stem.endswith(("-f32", "-f16")) else stem
    for kind in a.quantize:
        q = f"{stem}-{kind}.gguf"
        quantize(a.out, q, kind)
        print(f"wrote {q}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
