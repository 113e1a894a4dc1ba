"""Mixtral: softmax over the router logits, top-k, renormalised; experts w1 (gate), w3 (up), w2 (down)."""
from .arch_base import HFArch, common_config, require


class Mixtral(HFArch):
    name = "mixtral"
    hf_classes = ("MixtralForCausalLM",)
    moe_prefixes = ("block_sparse_moe", "mlp")
    expert_names = {"gate": "w1", "up": "w3", "down": "w2"}

    def config(self, hf):
        cfg = common_config(hf, self.name)
        cfg.update(
            expert_intermediate=require(hf, "intermediate_size", self.name),
            norm_topk_prob=True,
        )
        return cfg
