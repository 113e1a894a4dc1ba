"""GLM-4.5 MoE (Glm4MoeForCausalLM): partial rotary embeddings, q/k/v biases, optional per-head
q/k norms, sigmoid routing with a score-correction bias over groups of experts, a shared expert,
routed weights scaled by routed_scaling_factor; the first first_k_dense_replace layers dense
(1 in every published checkpoint).
"""
from typing import Any, Dict, List

from .arch_base import F32_ONLY, HFArch, Resident, common_config, dense_config, leading_dense_layers, require
from .rope import rope_parameters


class Glm4Moe(HFArch):
    name = "glm4_moe"
    hf_classes = ("Glm4MoeForCausalLM",)
    shared_expert_name = "shared_experts"

    def config(self, hf: Dict[str, Any]) -> Dict[str, Any]:
        partial = float(rope_parameters(hf).get("partial_rotary_factor", hf.get("partial_rotary_factor", 0.5)))
        cfg = common_config(dict(hf, partial_rotary_factor=1.0), self.name)
        head_dim = cfg["head_dim"]
        cfg.update(
            expert_intermediate=require(hf, "moe_intermediate_size", self.name),
            shared_intermediate=int(hf["moe_intermediate_size"]) * int(hf.get("n_shared_experts", 1)),
            norm_topk_prob=bool(hf.get("norm_topk_prob", True)),
            qkv_bias=bool(hf.get("attention_bias", False)),
            qk_norm="head" if hf.get("use_qk_norm") else "none",
            routing="sigmoid", router_correction_bias=True,
            n_group=int(hf.get("n_group", 1)), topk_group=int(hf.get("topk_group", 1)),
            routed_scaling_factor=float(hf.get("routed_scaling_factor", 1.0)),
            rotary_dim=int(head_dim * partial),
        )
        cfg.update(dense_config(hf, self.name, leading_dense_layers(hf, self.name, "first_k_dense_replace", 1)))
        return cfg

    def layer_residents(self, cfg: Dict[str, Any], l: int, moe: str, ckpt=None) -> List[Resident]:
        if l in cfg["dense_layers"]:
            return []
        return [Resident(f"layers.{l}.router_correction_bias", f"model.layers.{l}.{moe}.gate.e_score_correction_bias",
                         (cfg["n_experts"],), F32_ONLY)]
