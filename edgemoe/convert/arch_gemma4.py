"""Gemma 4 with its MoE block (Gemma4ForCausalLM, and the text model of the hub's
Gemma4ForConditionalGeneration, e.g. gemma-4-26B-A4B), as transformers' modeling_gemma4.py computes it:

* sliding-window layers and full-attention ("global") layers that differ in head width, key/value
  heads and rotary embedding (the global ones: proportional rope over the first
  partial_rotary_factor of each head, values from the key projection where attention_k_eq_v);
* per-head q and k norms, a weightless RMSNorm on the values, attention scaled by 1;
* sandwich norms (the attention's and the MLP block's outputs normalised before the residual add);
* every layer's MLP block: a dense gelu MLP (our shared expert) beside the routed experts, each with
  its own pre- and post-norm; the router reads a weightless RMSNorm of the residual times
  scale / sqrt(hidden), softmax, top-k renormalised, times a per-expert scale;
* token embeddings times sqrt(hidden), a per-layer output scalar, tanh soft-capped logits.

Refused, by name: the per-layer input embeddings and KV sharing of the small E2B/E4B models (dense,
not MoE), and bidirectional attention over text.
"""
from typing import Any, Dict, List, Tuple

import numpy as np

from ..errors import UnsupportedModelError
from .arch_base import (F32_ONLY, RESIDENT, SHARED, TEXT_PREFIX, HFArch, Resident, TextModelView, common_config, layer_types,
                        require, text_config, unsupported)

LAYER_TYPES = {"sliding_attention": True, "full_attention": False}
SLIDING_PATTERN = 6  # transformers' default: five sliding layers, then a full one
DEFAULT_ROPE = {"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                   "rope_theta": 1_000_000.0}}
DEFAULT_GLOBAL_HEAD_DIM = 512  # transformers' Gemma4TextConfig when a config names none


class Gemma4(HFArch):
    name = "gemma4"
    hf_classes = ("Gemma4ForCausalLM", "Gemma4ForConditionalGeneration")
    expert_input_norm = "pre_feedforward_layernorm_2"

    def checkpoint_view(self, ckpt):
        return TextModelView(ckpt) if f"{TEXT_PREFIX}embed_tokens.weight" in ckpt else ckpt

    def config(self, hf: Dict[str, Any]) -> Dict[str, Any]:
        t = text_config(hf)
        arch = self.name
        if not t.get("enable_moe_block"):
            raise UnsupportedModelError(f"{arch}: this Gemma 4 has no MoE block (enable_moe_block is off): it is a "
                                        "dense model, and edgemoe runs mixture-of-experts models")
        if t.get("hidden_size_per_layer_input"):
            raise unsupported(arch, "per-layer input embeddings (hidden_size_per_layer_input, the E2B/E4B models)")
        if t.get("num_kv_shared_layers"):
            raise unsupported(arch, "layers that share another layer's keys and values (num_kv_shared_layers)")
        if t.get("use_bidirectional_attention") == "all":
            raise unsupported(arch, "bidirectional attention over text (use_bidirectional_attention = 'all')")
        if t.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
            raise unsupported(arch, f"activation {t.get('hidden_activation')!r}")
        n_layers = require(t, "num_hidden_layers", arch)
        types = self._layer_types(t, n_layers)
        sliding = [l for l, kind in enumerate(types) if LAYER_TYPES[kind]]
        rope = self._rope(t)
        # common_config reads the fields every family shares; Gemma names two of them its own way.
        cfg = common_config(dict(t, num_experts_per_tok=require(t, "top_k_experts", arch), hidden_act="silu",
                                 rope_parameters=rope["sliding_attention"], rope_scaling=None),
                            arch, sliding_window_supported=True)
        window = int(t.get("sliding_window") or 0)
        if sliding and not window:
            raise UnsupportedModelError(f"{arch}: sliding_attention layers without a sliding_window")
        global_head_dim, global_kv_heads = self._global_widths(t, types, cfg)
        full = rope["full_attention"]
        angles = 0
        if full["rope_type"] == "proportional":
            angles = int(float(full.get("partial_rotary_factor", 1.0)) * global_head_dim // 2)
        bias = bool(t.get("attention_bias", False))
        cfg.update(
            # a multimodal checkpoint ties by its top-level flag, as transformers does
            tie_embeddings=bool(hf.get("tie_word_embeddings", t.get("tie_word_embeddings", True))),
            expert_intermediate=require(t, "moe_intermediate_size", arch),
            shared_intermediate=require(t, "intermediate_size", arch),
            routing="softmax", norm_topk_prob=True, expert_activation="gelu_tanh",
            qkv_bias=bias, o_bias=bias, qk_norm="head", value_norm=True, attention_scale=1.0,
            sliding_window=window if sliding else 0, sliding_layers=sliding,
            sandwich_norms=True, expert_norms=True, router_expert_scale=True, layer_output_scale=True,
            # transformers keeps sqrt(hidden) as a float32 tensor
            embedding_scale=float(np.float32(cfg["hidden"] ** 0.5)),
            final_logit_softcap=float(t.get("final_logit_softcapping") or 0.0),
        )
        if len(sliding) < n_layers:  # the global layers' own widths and rope
            cfg.update(global_head_dim=global_head_dim, global_kv_heads=global_kv_heads,
                       global_rope_theta=float(full["rope_theta"]), global_rope_angles=angles,
                       global_k_eq_v=bool(t.get("attention_k_eq_v", False)))
        return cfg

    @staticmethod
    def _layer_types(t: Dict[str, Any], n_layers: int) -> List[str]:
        types = layer_types(t, "gemma4", tuple(LAYER_TYPES), SLIDING_PATTERN, "full_attention")
        return types[:-1] + ["full_attention"]  # transformers forces the last layer to full attention

    @staticmethod
    def _rope(t: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
        params = t.get("rope_parameters") or DEFAULT_ROPE
        out = {}
        for kind, allowed in (("sliding_attention", ("default",)), ("full_attention", ("default", "proportional"))):
            p = params.get(kind) if isinstance(params, dict) else None
            if not isinstance(p, dict) or p.get("rope_type") not in allowed or "rope_theta" not in p:
                raise unsupported("gemma4", f"rope_parameters[{kind!r}] = {p!r} (supported rope types: "
                                            f"{', '.join(allowed)}, with a rope_theta)")
            if float(p.get("factor", 1.0)) != 1.0:
                raise unsupported("gemma4", f"a scaled rope on {kind} layers")
            out[kind] = p
        return out

    @staticmethod
    def _global_widths(t: Dict[str, Any], types: List[str], cfg: Dict[str, Any]) -> Tuple[int, int]:
        """The full-attention layers' head width and key/value heads: from per_layer_config (what
        transformers 5 saves), else global_head_dim / num_global_key_value_heads (the hub's configs)."""
        per_layer = t.get("per_layer_config")
        if isinstance(per_layer, dict) and not per_layer:  # saved by transformers: no layer differs
            return cfg["head_dim"], cfg["n_kv_heads"]
        if isinstance(per_layer, dict):
            widths = set()
            for key, override in per_layer.items():
                layer = int(key) if str(key).isdigit() else -1
                if not 0 <= layer < len(types) or not isinstance(override, dict) or \
                        set(override) - {"head_dim", "num_key_value_heads"}:
                    raise unsupported("gemma4", f"per_layer_config entry {key!r}: {override!r}")
                if LAYER_TYPES[types[layer]]:
                    raise unsupported("gemma4", f"per-layer widths on the sliding layer {layer}")
                widths.add((override.get("head_dim", cfg["head_dim"]),
                            override.get("num_key_value_heads", cfg["n_kv_heads"])))
            if len(widths) != 1 or len(per_layer) != types.count("full_attention"):
                raise unsupported("gemma4", "full-attention layers of different widths")
            return widths.pop()
        head_dim = t.get("global_head_dim") or DEFAULT_GLOBAL_HEAD_DIM
        kv_heads = t.get("num_global_key_value_heads") if t.get("attention_k_eq_v", False) else None
        return head_dim, kv_heads or cfg["n_kv_heads"]

    def layer_plan(self, cfg: Dict[str, Any], l: int) -> List[Resident]:
        """Layer l's resident tensors (they follow Gemma's names and widths, not the Llama plan)."""
        p, c = f"model.layers.{l}", f"layers.{l}"
        H, E, S = cfg["hidden"], cfg["n_experts"], cfg["shared_intermediate"]
        sliding = l in cfg["sliding_layers"]
        hd = cfg["head_dim"] if sliding else cfg["global_head_dim"]
        kv_heads = cfg["n_kv_heads"] if sliding else cfg["global_kv_heads"]
        q_dim, kv_dim = cfg["n_heads"] * hd, kv_heads * hd
        has_wv = sliding or not cfg["global_k_eq_v"]
        a = f"{p}.self_attn"
        plan = [(f"{c}.attn_norm", f"{p}.input_layernorm.weight", (H,), F32_ONLY),
                (f"{c}.wq", f"{a}.q_proj.weight", (q_dim, H), RESIDENT),
                (f"{c}.wk", f"{a}.k_proj.weight", (kv_dim, H), RESIDENT)]
        if has_wv:
            plan.append((f"{c}.wv", f"{a}.v_proj.weight", (kv_dim, H), RESIDENT))
        plan += [(f"{c}.wo", f"{a}.o_proj.weight", (H, q_dim), RESIDENT),
                 (f"{c}.q_norm", f"{a}.q_norm.weight", (hd,), F32_ONLY),
                 (f"{c}.k_norm", f"{a}.k_norm.weight", (hd,), F32_ONLY)]
        if cfg["qkv_bias"]:
            plan += [(f"{c}.bq", f"{a}.q_proj.bias", (q_dim,), F32_ONLY),
                     (f"{c}.bk", f"{a}.k_proj.bias", (kv_dim,), F32_ONLY),
                     (f"{c}.bo", f"{a}.o_proj.bias", (H,), F32_ONLY)]
            if has_wv:
                plan.append((f"{c}.bv", f"{a}.v_proj.bias", (kv_dim,), F32_ONLY))
        root = np.float32(H ** -0.5)
        plan += [
            (f"{c}.post_attn_norm", f"{p}.post_attention_layernorm.weight", (H,), F32_ONLY),
            (f"{c}.ffn_norm", f"{p}.pre_feedforward_layernorm.weight", (H,), F32_ONLY),
            (f"{c}.post_ffn_norm", f"{p}.post_feedforward_layernorm.weight", (H,), F32_ONLY),
            (f"{c}.shared_gate_proj", f"{p}.mlp.gate_proj.weight", (S, H), SHARED),
            (f"{c}.shared_up_proj", f"{p}.mlp.up_proj.weight", (S, H), SHARED),
            (f"{c}.shared_down_proj", f"{p}.mlp.down_proj.weight", (H, S), SHARED),
            (f"{c}.post_ffn_norm_1", f"{p}.post_feedforward_layernorm_1.weight", (H,), F32_ONLY),
            (f"{c}.router", f"{p}.router.proj.weight", (E, H), F32_ONLY),
            # the router's input: a weightless norm times scale / sqrt(hidden), one weight here
            Resident(f"{c}.router_norm", f"{p}.router.scale", (H,), F32_ONLY,
                     take=lambda s: s.astype(np.float32) * root),
            (f"{c}.router_expert_scale", f"{p}.router.per_expert_scale", (E,), F32_ONLY),
            (f"{c}.ffn_norm_2", f"{p}.pre_feedforward_layernorm_2.weight", (H,), F32_ONLY),
            (f"{c}.post_ffn_norm_2", f"{p}.post_feedforward_layernorm_2.weight", (H,), F32_ONLY),
            (f"{c}.layer_scale", f"{p}.layer_scalar", (1,), F32_ONLY),
        ]
        return [r if isinstance(r, Resident) else Resident(*r) for r in plan]

    def expert_sources(self, ckpt, cfg: Dict[str, Any], l: int, moe: str):
        E, H, I = cfg["n_experts"], cfg["hidden"], cfg["expert_intermediate"]
        base = f"model.layers.{l}.experts"
        return [(f"{base}.gate_up_proj", (E, 2 * I, H), None), (f"{base}.down_proj", (E, H, I), None)]

    def read_expert(self, ckpt, l: int, e: int, moe: str) -> Dict[str, np.ndarray]:
        base = f"model.layers.{l}.experts"
        gate_up = ckpt.get(f"{base}.gate_up_proj", e)  # [2I, hidden]: gate rows first
        I = gate_up.shape[0] // 2
        return {"gate": gate_up[:I], "up": gate_up[I:], "down": ckpt.get(f"{base}.down_proj", e)}
