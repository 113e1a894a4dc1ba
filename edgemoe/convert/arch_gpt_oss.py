"""gpt-oss: attention sinks, sliding-window attention on alternate layers, biases on every
projection, the router and the experts, top-k of the router logits then a softmax over them,
and a clamped SwiGLU in the experts.

transformers keeps the experts stacked and transposed, gate and up interleaved by column:
experts.gate_up_proj [E, hidden, 2I] (gate = even columns), experts.down_proj [E, I, hidden].
"""
from typing import Any, Dict, List

from ..errors import UnsupportedModelError
from .arch_base import HFArch, Resident, common_config, require, F32_ONLY

LAYER_TYPES = {"sliding_attention": True, "full_attention": False}


class GptOss(HFArch):
    name = "gpt_oss"
    hf_classes = ("GptOssForCausalLM",)
    router_name = "router"

    def config(self, hf: Dict[str, Any]) -> Dict[str, Any]:
        cfg = common_config(hf, self.name, sliding_window_supported=True)
        n_layers = cfg["n_layers"]
        types = hf.get("layer_types") or ["sliding_attention" if i % 2 == 0 else "full_attention"
                                          for i in range(n_layers)]
        if len(types) != n_layers or any(t not in LAYER_TYPES for t in types):
            raise UnsupportedModelError(f"{self.name}: layer_types must name {n_layers} layers, each one of "
                                        f"{', '.join(LAYER_TYPES)}")
        sliding = [l for l, t in enumerate(types) if LAYER_TYPES[t]]
        window = int(hf.get("sliding_window") or 0)
        if sliding and not window:
            raise UnsupportedModelError(f"{self.name}: sliding_attention layers without a sliding_window")
        bias = bool(hf.get("attention_bias", True))
        cfg.update(
            expert_intermediate=require(hf, "intermediate_size", self.name),
            qkv_bias=bias, o_bias=bias, attention_sinks=True,
            sliding_window=window if sliding else 0, sliding_layers=sliding,
            router_bias=True, expert_bias=True, routing="topk_softmax", norm_topk_prob=False,
            expert_activation="swiglu_limited",
            swiglu_alpha=float(hf.get("swiglu_alpha", 1.702)), swiglu_limit=float(hf.get("swiglu_limit", 7.0)),
        )
        return cfg

    def layer_residents(self, cfg: Dict[str, Any], l: int, moe: str) -> List[Resident]:
        p, c = f"model.layers.{l}", f"layers.{l}"
        E, H, I = cfg["n_experts"], cfg["hidden"], cfg["expert_intermediate"]
        out = [Resident(f"{c}.sinks", f"{p}.self_attn.sinks", (cfg["n_heads"],), F32_ONLY),
               Resident(f"{c}.router_bias", f"{p}.{moe}.router.bias", (E,), F32_ONLY),
               Resident(f"{c}.expert_gate_bias", f"{p}.{moe}.experts.gate_up_proj_bias", (E, 2 * I), F32_ONLY,
                        take=lambda b: b[:, 0::2]),
               Resident(f"{c}.expert_up_bias", f"{p}.{moe}.experts.gate_up_proj_bias", (E, 2 * I), F32_ONLY,
                        take=lambda b: b[:, 1::2]),
               Resident(f"{c}.expert_down_bias", f"{p}.{moe}.experts.down_proj_bias", (E, H), F32_ONLY)]
        if cfg["o_bias"]:
            out.append(Resident(f"{c}.bo", f"{p}.self_attn.o_proj.bias", (H,), F32_ONLY))
        return out

    def expert_sources(self, l: int, moe: str) -> List[str]:
        base = f"model.layers.{l}.{moe}.experts"
        return [f"{base}.gate_up_proj", f"{base}.down_proj"]

    def read_expert(self, ckpt, l: int, e: int, moe: str):
        base = f"model.layers.{l}.{moe}.experts"
        gate_up = ckpt.get(f"{base}.gate_up_proj", e)  # [hidden, 2I]
        return {"gate": gate_up[:, 0::2].T, "up": gate_up[:, 1::2].T, "down": ckpt.get(f"{base}.down_proj", e).T}
