"""OLMoE: RMSNorm over the whole q and k projections (not per head), softmax then top-k."""
from .arch_base import HFArch, common_config, require, unsupported


class Olmoe(HFArch):
    name = "olmoe"
    hf_classes = ("OlmoeForCausalLM",)

    def config(self, hf):
        if hf.get("clip_qkv") is not None:
            raise unsupported(self.name, "clip_qkv")
        if hf.get("attention_bias"):
            raise unsupported(self.name, "attention_bias")
        cfg = common_config(hf, self.name)
        cfg.update(
            expert_intermediate=require(hf, "intermediate_size", self.name),
            norm_topk_prob=bool(hf.get("norm_topk_prob", False)),
            qk_norm="full",
        )
        return cfg
