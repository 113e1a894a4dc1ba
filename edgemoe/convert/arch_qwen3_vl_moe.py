"""Qwen3-VL-MoE (Qwen3VLMoeForConditionalGeneration, e.g. Qwen3-VL-30B-A3B): a Qwen3-MoE text model
under model.language_model (top-k always renormalised) with multimodal rotary positions, and a
vision tower with DeepStack mergers (edgemoe/convert/vision_tower.py; docs/VISION_MODELS.md).

Its experts come stacked in either of two layouts: the hub's (transformers 4), gate_up_proj
[E, hidden, 2I] and down_proj [E, I, hidden], or the module's that transformers 5 saves,
[E, 2I, hidden] and [E, hidden, I]. As transformers' own loader does, a tensor already of the
module's shape is taken as it is (hf.ExpertReader's stacked layout) and the hub's is transposed.
"""
from typing import Any, Dict, List

from .arch_base import Resident, TextModelView, text_config
from .arch_qwen3_moe import Qwen3Moe
from .vision_tower import has_vision, mrope_sections, vision_config, vision_residents

MROPE_SECTIONS = [24, 20, 20]  # what transformers uses when a config gives none


class Qwen3VlMoe(Qwen3Moe):
    name = "qwen3_vl_moe"
    hf_classes = ("Qwen3VLMoeForConditionalGeneration",)

    def checkpoint_view(self, ckpt):
        return TextModelView(ckpt)

    def config(self, hf: Dict[str, Any]) -> Dict[str, Any]:
        t = text_config(hf)
        cfg = super().config(t)
        cfg.update(
            norm_topk_prob=True,  # Qwen3VLMoeTextTopKRouter always renormalises
            tie_embeddings=bool(hf.get("tie_word_embeddings", t.get("tie_word_embeddings", False))),
            mrope_sections=mrope_sections(t, self.name, cfg["head_dim"] // 2, MROPE_SECTIONS),
        )
        if self.takes_images(hf):
            cfg.update(vision_config(hf, self.name, cfg["hidden"], deepstack=True))
        return cfg

    def takes_images(self, hf: Dict[str, Any]) -> bool:
        return has_vision(hf)

    def tower_residents(self, cfg: Dict[str, Any], hf: Dict[str, Any]) -> List[Resident]:
        return vision_residents(cfg, hf) if cfg.get("vision_depth") else []

    @staticmethod
    def _hub_layout(ckpt, cfg: Dict[str, Any], l: int, moe: str) -> bool:
        E, H, I = cfg["n_experts"], cfg["hidden"], cfg["expert_intermediate"]
        name = f"model.layers.{l}.{moe}.experts.gate_up_proj"
        return name in ckpt and tuple(ckpt.shape(name)) != (E, 2 * I, H)

    def expert_sources(self, ckpt, cfg, l, moe):
        if not self._hub_layout(ckpt, cfg, l, moe):
            return None  # the module's layout: read as any stacked checkpoint
        E, H, I = cfg["n_experts"], cfg["hidden"], cfg["expert_intermediate"]
        base = f"model.layers.{l}.{moe}.experts"
        return [(f"{base}.gate_up_proj", (E, H, 2 * I), None), (f"{base}.down_proj", (E, I, H), None)]

    def read_expert(self, ckpt, l, e, moe):
        I = ckpt.shape(f"model.layers.{l}.{moe}.experts.down_proj")[1]
        gate_up = ckpt.get(f"model.layers.{l}.{moe}.experts.gate_up_proj", e)  # [H, 2I]: gate columns first
        down = ckpt.get(f"model.layers.{l}.{moe}.experts.down_proj", e)        # [I, H]
        return {"gate": gate_up[:, :I].T.copy(), "up": gate_up[:, I:].T.copy(), "down": down.T.copy()}
