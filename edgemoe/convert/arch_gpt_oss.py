"""gpt-oss: attention sinks, sliding-window attention on alternate layers, biases on every
projection, the router and the experts, top-k of the router logits then a softmax over them,
and a clamped SwiGLU in the experts.

transformers keeps the experts stacked and transposed, gate and up interleaved by column:
experts.gate_up_proj [E, hidden, 2I] (gate = even columns), experts.down_proj [E, I, hidden].
The hub's checkpoints store them as MXFP4 instead, rows being outputs: gate_up_proj_blocks
[E, 2I, hidden / 32, 16] (gate = even rows) with gate_up_proj_scales [E, 2I, hidden / 32], and
down_proj_blocks / _scales [E, hidden, I / 32, ...]. Converted with --bits mxfp4 their blocks are
kept bit for bit; any other width decodes them first.
"""
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import UnsupportedModelError
from ..format import mxfp4, quant
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

    def layer_residents(self, cfg: Dict[str, Any], l: int, moe: str, ckpt=None) -> List[Resident]:
        p, c = f"model.layers.{l}", f"layers.{l}"
        E, H, I = cfg["n_experts"], cfg["hidden"], cfg["expert_intermediate"]
        out = [Resident(f"{c}.sinks", f"{p}.self_attn.sinks", (cfg["n_heads"],), F32_ONLY),
               Resident(f"{c}.router_bias", f"{p}.{moe}.router.bias", (E,), F32_ONLY),
               Resident(f"{c}.expert_down_bias", f"{p}.{moe}.experts.down_proj_bias", (E, H), F32_ONLY)]
        experts = f"{p}.{moe}.experts"
        if ckpt is not None and f"{experts}.gate_proj_bias" in ckpt:  # a GGUF: gate and up apart
            out += [Resident(f"{c}.expert_gate_bias", f"{experts}.gate_proj_bias", (E, I), F32_ONLY),
                    Resident(f"{c}.expert_up_bias", f"{experts}.up_proj_bias", (E, I), F32_ONLY)]
        else:  # transformers: interleaved, gate first
            out += [Resident(f"{c}.expert_gate_bias", f"{experts}.gate_up_proj_bias", (E, 2 * I), F32_ONLY,
                             take=lambda b: b[:, 0::2]),
                    Resident(f"{c}.expert_up_bias", f"{experts}.gate_up_proj_bias", (E, 2 * I), F32_ONLY,
                             take=lambda b: b[:, 1::2])]
        if cfg["o_bias"]:
            out.append(Resident(f"{c}.bo", f"{p}.self_attn.o_proj.bias", (H,), F32_ONLY))
        return out

    def expert_sources(self, ckpt, cfg: Dict[str, Any], l: int, moe: str) -> Optional[List[Tuple[str, tuple, Optional[str]]]]:
        base = f"model.layers.{l}.{moe}.experts"
        if f"{base}.0.gate_proj.weight" in ckpt:
            return None  # a GGUF served per expert: the common layout
        E, H, I = cfg["n_experts"], cfg["hidden"], cfg["expert_intermediate"]
        if f"{base}.gate_up_proj_blocks" in ckpt:
            if H % mxfp4.GROUP or I % mxfp4.GROUP:
                raise UnsupportedModelError(f"{self.name}: MXFP4 experts need hidden and intermediate sizes "
                                            f"that are multiples of {mxfp4.GROUP}")
            return [(f"{base}.gate_up_proj_blocks", (E, 2 * I, H // 32, 16), "U8"),
                    (f"{base}.gate_up_proj_scales", (E, 2 * I, H // 32), "U8"),
                    (f"{base}.down_proj_blocks", (E, H, I // 32, 16), "U8"),
                    (f"{base}.down_proj_scales", (E, H, I // 32), "U8")]
        return [(f"{base}.gate_up_proj", (E, H, 2 * I), None), (f"{base}.down_proj", (E, I, H), None)]

    @staticmethod
    def _mxfp4(ckpt, name: str, e: int) -> Optional[np.ndarray]:
        """Expert e's rows of `name` as our MXFP4 blocks [rows, cols / 32] when the checkpoint
        holds them as the hub does (name_blocks, name_scales), else None."""
        if f"{name}_blocks" not in ckpt:
            return None
        return mxfp4.from_hf(ckpt.get_raw(f"{name}_blocks", e), ckpt.get_raw(f"{name}_scales", e))

    def native_expert(self, ckpt, l: int, e: int, moe: str, qtype: int) -> Optional[Dict[str, np.ndarray]]:
        """The expert's parts as stored blocks, copied bit for bit, when asked for mxfp4 and the
        checkpoint has it (the hub's gpt-oss); else None."""
        base = f"model.layers.{l}.{moe}.experts"
        if qtype != quant.MXFP4 or f"{base}.gate_up_proj_blocks" not in ckpt:
            return None
        gate_up, down = self._mxfp4(ckpt, f"{base}.gate_up_proj", e), self._mxfp4(ckpt, f"{base}.down_proj", e)
        return {"gate": gate_up[0::2], "up": gate_up[1::2], "down": down}

    def read_expert(self, ckpt, l: int, e: int, moe: str) -> Dict[str, np.ndarray]:
        base = f"model.layers.{l}.{moe}.experts"
        gate_up = self._mxfp4(ckpt, f"{base}.gate_up_proj", e)
        if gate_up is not None:  # hub MXFP4: rows are the outputs already
            gate_up = mxfp4.dequantize_blocks(gate_up)  # [2I, hidden]
            down = mxfp4.dequantize_blocks(self._mxfp4(ckpt, f"{base}.down_proj", e))
            return {"gate": gate_up[0::2], "up": gate_up[1::2], "down": down}
        gate_up = ckpt.get(f"{base}.gate_up_proj", e)  # transformers' layout: [hidden, 2I]
        return {"gate": gate_up[:, 0::2].T, "up": gate_up[:, 1::2].T, "down": ckpt.get(f"{base}.down_proj", e).T}
