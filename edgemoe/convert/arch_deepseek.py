"""DeepSeek-V2 and -V3 (DeepseekV2ForCausalLM, DeepseekV3ForCausalLM; also DeepSeek-V2-Lite,
Moonlight and Kimi-K2, which use these classes): multi-head latent attention, q through a
low-rank bottleneck where the config has q_lora_rank, the first first_k_dense_replace layers
dense, shared experts, and routing by softmax (V2, greedy top-k) or by sigmoid with a
score-correction bias over groups of experts (V3).

Latent attention's container tensors (docs/FORMAT.md): kv_b_proj is split into each head's key
up-projection, transposed (wk_b: a query multiplies it to enter the latent space, which is
what lets the cache hold only the latent), and its value up-projection (wv_b). Checkpoints
whose rotary dims are interleaved pairs (V2 always, V3 with rope_interleave) get those rows
permuted to the half-split order the runtime rotates; q and k move together, so every score
is unchanged.
"""
from typing import Any, Dict, List

import numpy as np

from .arch_base import F32_ONLY, RESIDENT, HFArch, Resident, common_config, dense_config, leading_dense_layers, \
    require, unsupported
from .rope import rope_parameters, yarn_mscale


def deinterleave(rows: np.ndarray) -> np.ndarray:
    """Rows (x0, x1, x2, x3, ...) of interleaved rotary pairs in the half-split order (x0, x2, ..., x1, x3, ...)."""
    return np.concatenate([rows[0::2], rows[1::2]])


class DeepseekV2(HFArch):
    name = "deepseek_v2"
    hf_classes = ("DeepseekV2ForCausalLM",)
    shared_expert_name = "shared_experts"

    def routing(self, hf: Dict[str, Any]) -> Dict[str, Any]:
        method = hf.get("topk_method", "greedy")
        # transformers' V2 router never renormalises; it groups only under group_limited_greedy,
        # scoring a group by its best probability
        if method == "greedy":
            return {"routing": "softmax", "norm_topk_prob": False}
        if method == "group_limited_greedy":
            return {"routing": "softmax", "norm_topk_prob": False, "n_group": int(require(hf, "n_group", self.name)),
                    "topk_group": int(require(hf, "topk_group", self.name)), "group_score": "max"}
        raise unsupported(self.name, f"topk_method {method!r}")

    def interleaved(self, hf: Dict[str, Any]) -> bool:
        return True  # V2 rotates by complex multiplication of neighbouring pairs

    def config(self, hf: Dict[str, Any]) -> Dict[str, Any]:
        kv_lora = require(hf, "kv_lora_rank", self.name)
        nope, rope, v = (require(hf, k, self.name) for k in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"))
        if not all(isinstance(x, int) and x > 0 for x in (kv_lora, nope, rope, v)):
            raise unsupported(self.name, "latent ranks and head widths that are not positive integers")
        if hf.get("attention_bias") or hf.get("mlp_bias"):
            raise unsupported(self.name, "attention_bias / mlp_bias")
        q_lora = hf.get("q_lora_rank") or 0
        n_heads = require(hf, "num_attention_heads", self.name)
        cfg = common_config(dict(hf, head_dim=nope + rope, num_key_value_heads=n_heads), self.name)
        # transformers folds YaRN's mscale_all_dim into the softmax scale as well (yarn_apply_mscale)
        scale = (nope + rope) ** -0.5
        p = rope_parameters(hf)
        if p["rope_type"] != "default" and p.get("mscale_all_dim"):
            # the factor rope_config resolved (DeepSeek-V3's configs may leave it to the two contexts)
            factor = cfg.get("rope_factor") or p.get("factor") or 1.0
            scale *= yarn_mscale(factor, p["mscale_all_dim"]) ** 2
        experts = require(hf, "moe_intermediate_size", self.name)
        cfg.update(
            kv_lora_rank=kv_lora, q_lora_rank=int(q_lora), qk_rope_head_dim=rope, v_head_dim=v,
            # transformers builds the q_a / kv_a norms with their default eps whatever rms_norm_eps
            # says; llama.cpp uses rms_norm_eps (gguf.py passes it as latent_norm_eps)
            latent_norm_eps=float(hf.get("latent_norm_eps", 1e-6)),
            attention_scale=scale, expert_intermediate=experts,
            shared_intermediate=experts * int(hf.get("n_shared_experts") or 0),
            routed_scaling_factor=float(hf.get("routed_scaling_factor", 1.0)),
            **self.routing(hf),
        )
        cfg.update(dense_config(hf, self.name, leading_dense_layers(hf, self.name, "first_k_dense_replace", 0)))
        return cfg

    def attention_residents(self, cfg: Dict[str, Any], l: int, hf: Dict[str, Any]) -> List[Resident]:
        p, c = f"model.layers.{l}.self_attn", f"layers.{l}"
        H, heads, R = cfg["hidden"], cfg["n_heads"], cfg["kv_lora_rank"]
        rope, v = cfg["qk_rope_head_dim"], cfg["v_head_dim"]
        head = cfg["head_dim"]
        nope = head - rope
        q_dim = heads * head
        # each head's rows: nope of them, then the rotary ones
        interleaved = self.interleaved(hf)
        q_take = self.per_head_rope_rows(heads, nope, rope) if interleaved else None

        def wkv_a(w):
            return np.concatenate([w[:R], deinterleave(w[R:])]) if interleaved else w

        def wk_b(w):  # [heads * (nope + v), R] -> each head's key rows, transposed: [heads * R, nope]
            return np.concatenate([w.reshape(heads, nope + v, R)[h, :nope].T for h in range(heads)])

        def wv_b(w):  # -> each head's value rows: [heads * v, R]
            return w.reshape(heads, nope + v, R)[:, nope:].reshape(heads * v, R)

        if cfg["q_lora_rank"]:
            QR = cfg["q_lora_rank"]
            out = [Resident(f"{c}.wq_a", f"{p}.q_a_proj.weight", (QR, H), RESIDENT),
                   Resident(f"{c}.q_a_norm", f"{p}.q_a_layernorm.weight", (QR,), F32_ONLY),
                   Resident(f"{c}.wq_b", f"{p}.q_b_proj.weight", (q_dim, QR), RESIDENT, take=q_take)]
        else:
            out = [Resident(f"{c}.wq", f"{p}.q_proj.weight", (q_dim, H), RESIDENT, take=q_take)]
        kv_b = (heads * (nope + v), R)
        return out + [
            Resident(f"{c}.wkv_a", f"{p}.kv_a_proj_with_mqa.weight", (R + rope, H), RESIDENT, take=wkv_a),
            Resident(f"{c}.kv_a_norm", f"{p}.kv_a_layernorm.weight", (R,), F32_ONLY),
            Resident(f"{c}.wk_b", f"{p}.kv_b_proj.weight", kv_b, RESIDENT, take=wk_b),
            Resident(f"{c}.wv_b", f"{p}.kv_b_proj.weight", kv_b, RESIDENT, take=wv_b),
            Resident(f"{c}.wo", f"{p}.o_proj.weight", (H, heads * v), RESIDENT),
        ]

    @staticmethod
    def per_head_rope_rows(heads: int, nope: int, rope: int):
        def take(w):
            per = w.reshape(heads, nope + rope, -1)
            return np.concatenate([np.concatenate([h[:nope], deinterleave(h[nope:])]) for h in per])
        return take

    def layer_residents(self, cfg: Dict[str, Any], l: int, moe: str, ckpt=None) -> List[Resident]:
        return []


class DeepseekV3(DeepseekV2):
    name = "deepseek_v3"
    hf_classes = ("DeepseekV3ForCausalLM",)

    def routing(self, hf: Dict[str, Any]) -> Dict[str, Any]:
        method = hf.get("topk_method", "noaux_tc")
        if method != "noaux_tc":
            raise unsupported(self.name, f"topk_method {method!r}")
        return {"routing": "sigmoid", "router_correction_bias": True, "norm_topk_prob": bool(hf.get("norm_topk_prob", True)),
                "n_group": int(hf.get("n_group") or 1), "topk_group": int(hf.get("topk_group") or 1)}

    def interleaved(self, hf: Dict[str, Any]) -> bool:
        return bool(hf.get("rope_interleave", True))

    def layer_residents(self, cfg: Dict[str, Any], l: int, moe: str, ckpt=None) -> List[Resident]:
        if l in cfg["dense_layers"]:
            return []
        return [Resident(f"layers.{l}.router_correction_bias", f"model.layers.{l}.{moe}.gate.e_score_correction_bias",
                         (cfg["n_experts"],), F32_ONLY)]
