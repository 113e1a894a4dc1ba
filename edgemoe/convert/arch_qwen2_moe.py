"""Qwen2-MoE (Qwen1.5-MoE): q/k/v biases, a shared expert scaled by sigmoid(shared_expert_gate(x))."""
from .arch_base import HFArch, common_config, qwen_dense_layers, require, unsupported


class Qwen2Moe(HFArch):
    name = "qwen2_moe"
    hf_classes = ("Qwen2MoeForCausalLM",)

    def config(self, hf):
        cfg = common_config(hf, self.name)
        if hf.get("use_sliding_window"):
            raise unsupported(self.name, "use_sliding_window")
        cfg.update(
            expert_intermediate=require(hf, "moe_intermediate_size", self.name),
            shared_intermediate=int(hf.get("shared_expert_intermediate_size") or 0),
            norm_topk_prob=bool(hf.get("norm_topk_prob", False)),
            qkv_bias=True,
        )
        cfg["shared_gate"] = cfg["shared_intermediate"] > 0
        cfg.update(qwen_dense_layers(hf, self.name))
        return cfg
