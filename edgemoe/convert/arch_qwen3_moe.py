"""Qwen3-MoE: RMSNorm on each head of q and k before RoPE, an explicit head_dim, no shared expert."""
from .arch_base import HFArch, common_config, qwen_dense_layers, require, unsupported


class Qwen3Moe(HFArch):
    name = "qwen3_moe"
    hf_classes = ("Qwen3MoeForCausalLM",)

    def config(self, hf):
        if hf.get("attention_bias"):
            raise unsupported(self.name, "attention_bias")
        if hf.get("use_sliding_window"):
            raise unsupported(self.name, "use_sliding_window")
        cfg = common_config(hf, self.name)
        cfg.update(
            expert_intermediate=require(hf, "moe_intermediate_size", self.name),
            norm_topk_prob=bool(hf.get("norm_topk_prob", True)),
            qk_norm="head",
        )
        cfg.update(qwen_dense_layers(hf, self.name))
        return cfg
