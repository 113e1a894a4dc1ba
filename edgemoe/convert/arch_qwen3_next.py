"""Qwen3-Next (Qwen3NextForCausalLM) and Qwen3.5/3.6-MoE (Qwen3_5MoeForCausalLM, and the text model of
Qwen3_5MoeForConditionalGeneration), as transformers' modeling files compute them (docs/HYBRID_MODELS.md):

* most layers are Gated DeltaNet linear attention (layer_types, or every full_attention_interval-th
  layer full attention): a recurrent state instead of a KV cache;
* the other layers are full attention with per-head q/k norms, partial rotary embeddings and an
  output gate: q_proj holds each head's query and then its gate;
* every RMSNorm but the linear layers' gated one multiplies by 1 + w (stored here as a plain weight);
* a MoE block with a sigmoid-gated shared expert; top-k renormalised (always, for Qwen3.5).

Qwen3-Next's fused in_proj_qkvz / in_proj_ba, grouped per key head, are gathered into Qwen3.5's
layout (all q, all k, all v; z; b; a), which is what the runtime reads. A multimodal checkpoint
converts its text model and its vision tower (edgemoe/convert/vision_tower.py). A multi-token-prediction head (mtp.*) is kept
in the container, last in the resident section, where no engine loads it (kept_for_later).
"""
from typing import Any, Dict, List

import numpy as np

from ..errors import UnsupportedModelError
from .arch_base import (F32_ONLY, RESIDENT, SHARED, TEXT_PREFIX, HFArch, Resident, TextModelView, common_config,
                        layer_types, one_plus, positive_field, qwen_dense_layers, require, text_config, unsupported)
from .rope import rope_parameters
from .vision_tower import has_vision, mrope_sections, vision_config, vision_residents

LAYER_KINDS = ("linear_attention", "full_attention")
# Set in the config by a source that holds Qwen3-Next's linear projections already split as
# Qwen3.5's are (llama.cpp's qwen3next GGUFs: attn_qkv, attn_gate, ssm_ba split by the reader).
SPLIT_PROJECTIONS = "edgemoe_split_linear_projections"
MROPE_SECTIONS = [11, 11, 10]  # Qwen3.5's, which transformers uses when a config gives none


class _HybridQwen(HFArch):
    own_attention = True
    norm_take = staticmethod(one_plus)

    def checkpoint_view(self, ckpt):
        return TextModelView(ckpt) if f"{TEXT_PREFIX}embed_tokens.weight" in ckpt else ckpt

    def config(self, hf: Dict[str, Any]) -> Dict[str, Any]:
        t = text_config(hf)
        arch = self.name
        if t.get("attention_bias"):
            raise unsupported(arch, "attention_bias")
        # (transformers' Qwen3NextConfig: every full_attention_interval-th layer attends in full)
        every = positive_field(t, "full_attention_interval", arch, default=4) if t.get("layer_types") is None else 4
        types = layer_types(t, arch, LAYER_KINDS, every, "full_attention")
        partial = float(rope_parameters(t).get("partial_rotary_factor", t.get("partial_rotary_factor", 0.25)))
        cfg = common_config(dict(t, partial_rotary_factor=1.0), arch)
        Nk, Nv = positive_field(t, "linear_num_key_heads", arch), positive_field(t, "linear_num_value_heads", arch)
        if Nv % Nk:
            raise UnsupportedModelError(f"{arch}: linear_num_value_heads ({Nv}) is not a multiple of "
                                        f"linear_num_key_heads ({Nk})")
        shared = int(t.get("shared_expert_intermediate_size") or 0)
        cfg.update(
            tie_embeddings=bool(t.get("tie_word_embeddings", hf.get("tie_word_embeddings", False))),
            expert_intermediate=require(t, "moe_intermediate_size", arch),
            shared_intermediate=shared, shared_gate=shared > 0,
            norm_topk_prob=self.norm_topk_prob(t),
            qk_norm="head", attn_output_gate=True,
            rotary_dim=int(cfg["head_dim"] * partial),
            linear_layers=[l for l, kind in enumerate(types) if kind == "linear_attention"],
            linear_conv_kernel=positive_field(t, "linear_conv_kernel_dim", arch),
            linear_key_heads=Nk, linear_value_heads=Nv,
            linear_key_head_dim=positive_field(t, "linear_key_head_dim", arch),
            linear_value_head_dim=positive_field(t, "linear_value_head_dim", arch),
        )
        cfg.update(self.dense_layers(t))
        if self.takes_images(hf):
            cfg["mrope_sections"] = mrope_sections(t, arch, cfg["rotary_dim"] // 2, MROPE_SECTIONS)
            cfg.update(vision_config(hf, arch, cfg["hidden"], deepstack=False))
        return cfg

    def tower_residents(self, cfg: Dict[str, Any], hf: Dict[str, Any]) -> List[Resident]:
        return vision_residents(cfg, hf) if cfg.get("vision_depth") else []

    def kept_for_later(self, cfg: Dict[str, Any], ckpt) -> List[Resident]:
        """The multi-token-prediction head (docs/HYBRID_MODELS.md section 7), where the checkpoint
        has one under mtp.*: its input projection and norms, then each of its layers (a gated
        full-attention layer with MoE) in this format's names and conventions, experts one tensor
        each. Kept for a drafter; no engine loads it yet."""
        names = ckpt.names() if hasattr(ckpt, "names") else []
        layers = sorted({int(n.split(".")[2]) for n in names if n.startswith("mtp.layers.") and n.split(".")[2].isdigit()})
        if "mtp.fc.weight" not in ckpt or layers != list(range(len(layers))):
            return []
        H, E, I, S = cfg["hidden"], cfg["n_experts"], cfg["expert_intermediate"], cfg["shared_intermediate"]
        plan = [Resident("mtp.fc", "mtp.fc.weight", (H, 2 * H), RESIDENT),
                Resident("mtp.norm_embedding", "mtp.pre_fc_norm_embedding.weight", (H,), F32_ONLY, one_plus),
                Resident("mtp.norm_hidden", "mtp.pre_fc_norm_hidden.weight", (H,), F32_ONLY, one_plus),
                Resident("mtp.norm", "mtp.norm.weight", (H,), F32_ONLY, one_plus)]
        for i in layers:
            p, c = f"mtp.layers.{i}", f"mtp.layers.{i}"
            m = f"{p}.mlp"
            plan += [Resident(f"{c}.attn_norm", f"{p}.input_layernorm.weight", (H,), F32_ONLY, one_plus),
                     *self._gated_attention(cfg, p, c, H),
                     Resident(f"{c}.ffn_norm", f"{p}.post_attention_layernorm.weight", (H,), F32_ONLY, one_plus),
                     Resident(f"{c}.router", f"{m}.gate.weight", (E, H), F32_ONLY)]
            if S:
                plan += [Resident(f"{c}.shared_gate_proj", f"{m}.shared_expert.gate_proj.weight", (S, H), SHARED),
                         Resident(f"{c}.shared_up_proj", f"{m}.shared_expert.up_proj.weight", (S, H), SHARED),
                         Resident(f"{c}.shared_down_proj", f"{m}.shared_expert.down_proj.weight", (H, S), SHARED),
                         Resident(f"{c}.shared_expert_gate", f"{m}.shared_expert_gate.weight", (1, H), F32_ONLY)]
            stacked = f"{m}.experts.gate_up_proj" in ckpt
            for e in range(E):
                x = f"{c}.experts.{e}"
                if stacked:  # one expert's slice of the stacked tensors: gate rows, then up rows
                    plan += [Resident(f"{x}.gate", f"{m}.experts.gate_up_proj", (E, 2 * I, H), RESIDENT,
                                      lambda w: w[:I], e),
                             Resident(f"{x}.up", f"{m}.experts.gate_up_proj", (E, 2 * I, H), RESIDENT,
                                      lambda w: w[I:], e),
                             Resident(f"{x}.down", f"{m}.experts.down_proj", (E, H, I), RESIDENT, None, e)]
                else:
                    plan += [Resident(f"{x}.{part}", f"{m}.experts.{e}.{part}_proj.weight", shape, RESIDENT)
                             for part, shape in (("gate", (I, H)), ("up", (I, H)), ("down", (H, I)))]
        return plan

    def norm_topk_prob(self, t: Dict[str, Any]) -> bool:
        raise NotImplementedError

    def dense_layers(self, t: Dict[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError

    def attention_residents(self, cfg: Dict[str, Any], l: int, hf: Dict[str, Any]) -> List[Resident]:
        p, c = f"model.layers.{l}", f"layers.{l}"
        H = cfg["hidden"]
        if l not in cfg["linear_layers"]:
            return self._gated_attention(cfg, p, c, H)
        Nk, Nv = cfg["linear_key_heads"], cfg["linear_value_heads"]
        dk, dv, Kc = cfg["linear_key_head_dim"], cfg["linear_value_head_dim"], cfg["linear_conv_kernel"]
        KD, VD = Nk * dk, Nv * dv
        a = f"{p}.linear_attn"
        decay_rate = lambda w: -np.exp(w.astype(np.float32))  # noqa: E731 (g = decay_rate * softplus(a + dt_bias))
        return [Resident(*r) for r in [
            *self.linear_projections(a, c, H, Nk, Nv, dk, dv, hf),
            (f"{c}.lin_conv", f"{a}.conv1d.weight", (2 * KD + VD, 1, Kc), F32_ONLY, lambda w: w.reshape(w.shape[0], -1)),
            (f"{c}.lin_dt_bias", f"{a}.dt_bias", (Nv,), F32_ONLY),
            (f"{c}.lin_decay_rate", f"{a}.A_log", (Nv,), F32_ONLY, decay_rate),
            (f"{c}.lin_norm", f"{a}.norm.weight", (dv,), F32_ONLY),  # a plain weight
            (f"{c}.lin_out", f"{a}.out_proj.weight", (H, VD), RESIDENT),
        ]]

    def linear_projections(self, a: str, c: str, H: int, Nk: int, Nv: int, dk: int, dv: int, hf) -> list:
        """The lin_qkv, lin_z, lin_b and lin_a tensors from the checkpoint's projections."""
        KD, VD = Nk * dk, Nv * dv
        return [(f"{c}.lin_qkv", f"{a}.in_proj_qkv.weight", (2 * KD + VD, H), RESIDENT),
                (f"{c}.lin_z", f"{a}.in_proj_z.weight", (VD, H), RESIDENT),
                (f"{c}.lin_b", f"{a}.in_proj_b.weight", (Nv, H), RESIDENT),
                (f"{c}.lin_a", f"{a}.in_proj_a.weight", (Nv, H), RESIDENT)]

    @staticmethod
    def _gated_attention(cfg: Dict[str, Any], p: str, c: str, H: int) -> List[Resident]:
        nh, hd = cfg["n_heads"], cfg["head_dim"]
        kv_dim = cfg["n_kv_heads"] * hd
        a = f"{p}.self_attn"

        def half(i):  # q_proj's rows are [query | gate] per head
            return lambda w: w.reshape(nh, 2, hd, w.shape[-1])[:, i].reshape(nh * hd, w.shape[-1])

        return [Resident(*r) for r in [
            (f"{c}.wq", f"{a}.q_proj.weight", (nh * 2 * hd, H), RESIDENT, half(0)),
            (f"{c}.wq_gate", f"{a}.q_proj.weight", (nh * 2 * hd, H), RESIDENT, half(1)),
            (f"{c}.wk", f"{a}.k_proj.weight", (kv_dim, H), RESIDENT),
            (f"{c}.wv", f"{a}.v_proj.weight", (kv_dim, H), RESIDENT),
            (f"{c}.wo", f"{a}.o_proj.weight", (H, nh * hd), RESIDENT),
            (f"{c}.q_norm", f"{a}.q_norm.weight", (hd,), F32_ONLY, one_plus),
            (f"{c}.k_norm", f"{a}.k_norm.weight", (hd,), F32_ONLY, one_plus),
        ]]


class Qwen35Moe(_HybridQwen):
    name = "qwen3_5_moe"
    hf_classes = ("Qwen3_5MoeForCausalLM", "Qwen3_5MoeForConditionalGeneration")

    def takes_images(self, hf):
        return has_vision(hf)

    def norm_topk_prob(self, t):
        return True  # Qwen3_5MoeTopKRouter always renormalises

    def dense_layers(self, t):
        return {}  # every layer is MoE



class Qwen3Next(_HybridQwen):
    name = "qwen3_next"
    hf_classes = ("Qwen3NextForCausalLM",)

    def norm_topk_prob(self, t):
        return bool(t.get("norm_topk_prob", True))

    def dense_layers(self, t):
        return qwen_dense_layers(t, self.name)

    def linear_projections(self, a, c, H, Nk, Nv, dk, dv, hf):
        if hf.get(SPLIT_PROJECTIONS):
            return super().linear_projections(a, c, H, Nk, Nv, dk, dv, hf)
        r = Nv // Nk
        G = 2 * dk + 2 * r * dv  # in_proj_qkvz's rows per key head: q, k, its r value heads' v, then z
        heads = range(Nv)
        q = [g * G + i for g in range(Nk) for i in range(dk)]
        k = [g * G + dk + i for g in range(Nk) for i in range(dk)]
        v = [(j // r) * G + 2 * dk + (j % r) * dv + i for j in heads for i in range(dv)]
        z = [(j // r) * G + 2 * dk + r * dv + (j % r) * dv + i for j in heads for i in range(dv)]
        b = [(j // r) * 2 * r + j % r for j in heads]  # in_proj_ba's rows per key head: r b's, then r a's
        a_rows = [(j // r) * 2 * r + r + j % r for j in heads]
        qkvz, ba = f"{a}.in_proj_qkvz.weight", f"{a}.in_proj_ba.weight"
        rows = lambda idx: (lambda w: w[np.asarray(idx)])  # noqa: E731
        return [(f"{c}.lin_qkv", qkvz, (Nk * G, H), RESIDENT, rows(q + k + v)),
                (f"{c}.lin_z", qkvz, (Nk * G, H), RESIDENT, rows(z)),
                (f"{c}.lin_b", ba, (2 * Nv, H), RESIDENT, rows(b)),
                (f"{c}.lin_a", ba, (2 * Nv, H), RESIDENT, rows(a_rows))]
