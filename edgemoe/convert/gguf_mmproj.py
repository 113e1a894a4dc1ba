"""llama.cpp's mmproj GGUF of Qwen3-VL (projector type qwen3vl_merger; docs/VISION_MODELS.md part B.1)
served under transformers' names (model.visual.*), beside the text model's GGUF.

What llama.cpp's converter changed is undone here: the Conv3d patch embedding was split into one
2-D kernel per temporal frame (v.patch_embd.weight and .weight.1), stacked back; DeepStack mergers
are named by the tower block they follow (v.deepstack.8), numbered back in order. The processor
settings an mmproj does not carry (the pixel budget) are Qwen3-VL's published ones.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import FormatError, UnsupportedModelError
from .vision_tower import VISION_ACTIVATION, VISION_PREFIX

PROJECTOR = "qwen3vl_merger"
# Qwen3-VL's preprocessor_config.json (the hub's; an mmproj keeps only mean, std, patch and merge)
PUBLISHED_PIXELS = {"shortest_edge": 65536, "longest_edge": 16777216}
TEMPORAL_PATCH = 2  # the two 2-D kernels of v.patch_embd.weight(.1)

# llama.cpp's names -> transformers' (tools/export_mmproj.py writes by the same tables): a block's
# (v.blk.N.X.{weight,bias} -> blocks.N.Y.*), the tower's own, a DeepStack merger's (v.deepstack.B.X.*).
BLOCK_TENSORS = {"ln1": "norm1", "ln2": "norm2", "attn_qkv": "attn.qkv", "attn_out": "attn.proj",
          "ffn_up": "mlp.linear_fc1", "ffn_down": "mlp.linear_fc2"}
TOP_TENSORS = {"v.patch_embd.bias": "patch_embed.proj.bias", "v.position_embd.weight": "pos_embed.weight",
        "v.post_ln.weight": "merger.norm.weight", "v.post_ln.bias": "merger.norm.bias",
        "mm.0.weight": "merger.linear_fc1.weight", "mm.0.bias": "merger.linear_fc1.bias",
        "mm.2.weight": "merger.linear_fc2.weight", "mm.2.bias": "merger.linear_fc2.bias"}
DEEPSTACK_TENSORS = {"norm": "norm", "fc1": "linear_fc1", "fc2": "linear_fc2"}
PATCH_EMBED = VISION_PREFIX + "patch_embed.proj.weight"


class MmprojCheckpoint:
    """The tower's tensors of an mmproj file, by transformers' names (the Checkpoint interface)."""

    def __init__(self, path: str):
        from .gguf import GGUFFile

        self.path = path
        self.file = GGUFFile(path)
        kind = self.file.field("clip.projector_type", "")
        if kind != PROJECTOR:
            raise UnsupportedModelError(f"{path}: mmproj projector {kind!r} is not supported (only {PROJECTOR}, "
                                        "Qwen3-VL's)")
        names = self.file.tensors
        if "v.patch_embd.weight" not in names or "v.patch_embd.weight.1" not in names:
            raise FormatError(f"{path}: a Qwen3-VL mmproj holds v.patch_embd.weight and v.patch_embd.weight.1")
        self.deepstack = sorted({int(m.group(1)) for n in names for m in [re.match(r"v\.deepstack\.(\d+)\.", n)] if m})
        self.map: Dict[str, str] = {}
        for gname in names:
            hf = self._hf_name(gname)
            if hf is not None:
                self.map[VISION_PREFIX + hf] = gname

    def _hf_name(self, gname: str) -> Optional[str]:
        if gname in TOP_TENSORS:
            return TOP_TENSORS[gname]
        m = re.match(r"v\.blk\.(\d+)\.(\w+)\.(weight|bias)$", gname)
        if m and m.group(2) in BLOCK_TENSORS:
            return f"blocks.{m.group(1)}.{BLOCK_TENSORS[m.group(2)]}.{m.group(3)}"
        m = re.match(r"v\.deepstack\.(\d+)\.(\w+)\.(weight|bias)$", gname)
        if m and m.group(2) in DEEPSTACK_TENSORS:
            k = self.deepstack.index(int(m.group(1)))
            return f"deepstack_merger_list.{k}.{DEEPSTACK_TENSORS[m.group(2)]}.{m.group(3)}"
        return None

    def vision_config(self, text_hidden: int) -> Dict[str, Any]:
        """transformers' vision_config of the tower, from the mmproj's metadata and tensors."""
        f = self.file.field
        if not f("clip.use_gelu", False):
            raise UnsupportedModelError(f"{self.path}: the mmproj's blocks do not use GELU")
        positions = self.shape(VISION_PREFIX + "pos_embed.weight")[0]
        return {"depth": int(f("clip.vision.block_count")), "hidden_size": int(f("clip.vision.embedding_length")),
                "intermediate_size": int(f("clip.vision.feed_forward_length")),
                "num_heads": int(f("clip.vision.attention.head_count")),
                "patch_size": int(f("clip.vision.patch_size")), "temporal_patch_size": TEMPORAL_PATCH,
                "spatial_merge_size": int(f("clip.vision.spatial_merge_size", 2)), "in_channels": 3,
                "num_position_embeddings": int(positions), "out_hidden_size": text_hidden,
                "deepstack_visual_indexes": list(self.deepstack), "hidden_act": VISION_ACTIVATION}

    def image_processor(self) -> Dict[str, Any]:
        """A preprocessor_config.json of the model, as edgemoe.vision.ImageSettings reads one."""
        f = self.file.field
        return {"size": dict(PUBLISHED_PIXELS), "patch_size": int(f("clip.vision.patch_size")),
                "temporal_patch_size": TEMPORAL_PATCH, "merge_size": int(f("clip.vision.spatial_merge_size", 2)),
                "image_mean": [float(x) for x in f("clip.vision.image_mean")],
                "image_std": [float(x) for x in f("clip.vision.image_std")]}

    # --- the Checkpoint interface ---
    def __contains__(self, name: str) -> bool:
        return name in self.map or name == PATCH_EMBED

    def names(self) -> List[str]:
        return [PATCH_EMBED] + list(self.map)

    def shape(self, name: str) -> Tuple[int, ...]:
        if name == PATCH_EMBED:  # [D, 3, P, P] per frame -> [D, 3, T, P, P]
            D, C, P, Q = self.file._dims("v.patch_embd.weight")
            return (D, C, TEMPORAL_PATCH, P, Q)
        return tuple(self.file._dims(self.map[name]))

    def _tensor(self, gname: str) -> np.ndarray:
        t = self.file.tensors[gname]
        return self.file._decode(t, t.data).reshape(self.file._dims(gname))

    def get(self, name: str, index: Optional[int] = None) -> np.ndarray:
        if name == PATCH_EMBED:
            frames = [self._tensor("v.patch_embd.weight"), self._tensor("v.patch_embd.weight.1")]
            if frames[0].shape != frames[1].shape:
                raise FormatError(f"{self.path}: the two patch embedding kernels differ in shape")
            w = np.stack(frames, axis=2)
        else:
            w = self._tensor(self.map[name])
        return w if index is None else w[index]

    def native(self, name: str, qtype: int):
        return None  # the tower is small beside the experts: decoded and encoded again


class WithTower:
    """A text model's checkpoint and its tower's, read as one (names under model.visual. go to the tower)."""

    def __init__(self, text, tower: MmprojCheckpoint):
        self.text, self.tower = text, tower

    def _of(self, name: str):
        return self.tower if name.startswith(VISION_PREFIX) else self.text

    def __contains__(self, name: str) -> bool:
        return name in self._of(name)

    def names(self) -> List[str]:
        return self.text.names() + self.tower.names()

    def shape(self, name: str):
        return self._of(name).shape(name)

    def get(self, name: str, index: Optional[int] = None):
        return self._of(name).get(name, index)

    def native(self, name: str, qtype: int):
        return self._of(name).native(name, qtype)


# The text models an mmproj of this projector goes with: Qwen3-VL-MoE's and Qwen3.5-MoE's.
TEXT_ARCHS = ("qwen3vlmoe", "qwen35moe")
# The tokens around and in an image, by their text in the model's vocabulary (Qwen's).
IMAGE_TOKENS = {"image_token_id": "<|image_pad|>", "vision_start_token_id": "<|vision_start|>",
                "vision_end_token_id": "<|vision_end|>"}


def with_tower(text, hf: Dict[str, Any], mmproj: str):
    """The text GGUF's checkpoint with the mmproj's tower beside it, hf (the text's transformers-style
    config) given the vision_config and image token ids, and the manifest's image_processor entry."""
    from ..vision.preprocess import ImageSettings

    a = text.arch_name
    if a not in TEXT_ARCHS:
        raise UnsupportedModelError(f"{mmproj}: an mmproj is converted with a {' or '.join(TEXT_ARCHS)} GGUF, not {a}")
    tower = MmprojCheckpoint(mmproj)
    wanted = int(text.field(f"{a}.n_deepstack_layers", 0))
    if wanted != len(tower.deepstack):
        raise FormatError(f"{mmproj}: the text model takes {wanted} DeepStack features, the mmproj gives "
                          f"{len(tower.deepstack)}; are they of the same model?")
    sections = text.fields.get(f"{a}.rope.dimension_sections")
    if sections is not None:  # the multimodal rope's [time, height, width] pairs (a fourth, 0, is llama.cpp's)
        hf["rope_parameters"] = dict(hf.get("rope_parameters") or {},
                                     mrope_section=[int(s) for s in list(text.field(f"{a}.rope.dimension_sections"))[:3]])
    hf["vision_config"] = tower.vision_config(hf["hidden_size"])
    tokens = list(text.field("tokenizer.ggml.tokens", []))
    for key, token in IMAGE_TOKENS.items():
        if token not in tokens:
            raise FormatError(f"{text.path}: its vocabulary lacks {token}, which images need")
        hf[key] = tokens.index(token)
    settings = ImageSettings.from_preprocessor_config(tower.image_processor())
    return WithTower(text, tower), {"image_processor": settings.to_dict()}
