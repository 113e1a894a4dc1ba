#!/usr/bin/env python3
"""Write a Qwen3-VL-MoE (or Qwen3.5-MoE) folder's vision tower as llama.cpp's mmproj GGUF (projector qwen3vl_merger),
the file llama.cpp's convert_hf_to_gguf.py --mmproj writes (docs/VISION_MODELS.md part B.1), so tests
can run llama.cpp's mtmd on our fixtures without torch. The text model is tools/export_gguf.py's.

    python tools/export_mmproj.py tests/fixtures/qwen3_vl_moe -o mmproj-f32.gguf [--type f16]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from edgemoe.convert.hf import _read_json, pick_arch  # noqa: E402
from edgemoe.convert.gguf_mmproj import BLOCK_TENSORS, DEEPSTACK_TENSORS, PROJECTOR, TOP_TENSORS  # noqa: E402
from edgemoe.convert.safetensors_reader import Checkpoint  # noqa: E402
from edgemoe.convert.vision_tower import VISION_PREFIX  # noqa: E402
from edgemoe.errors import UnsupportedModelError  # noqa: E402


def export_mmproj(src: str, out: str, out_type: str = "f32") -> None:
    import gguf

    hf = _read_json(os.path.join(src, "config.json"), required=True)
    arch = pick_arch(hf)
    if arch.name not in ("qwen3_vl_moe", "qwen3_5_moe"):
        raise UnsupportedModelError(f"{src}: only Qwen3-VL-MoE's and Qwen3.5-MoE's towers are written as an mmproj")
    cfg = arch.config(hf)
    processor = _read_json(os.path.join(src, "preprocessor_config.json"), required=True)
    ck = Checkpoint(src)
    v = VISION_PREFIX
    D, depth, layers = cfg["vision_hidden"], cfg["vision_depth"], cfg["vision_deepstack_layers"]
    dtype = np.float32 if out_type == "f32" else np.float16
    w = gguf.GGUFWriter(out + ".partial", "clip")
    w.add_type("mmproj")
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if out_type == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_string("clip.projector_type", PROJECTOR)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.use_gelu", True)
    w.add_uint32("clip.vision.projection_dim", cfg["hidden"])
    w.add_uint32("clip.vision.image_size", cfg["vision_position_side"] * cfg["vision_patch_size"])
    w.add_uint32("clip.vision.patch_size", cfg["vision_patch_size"])
    w.add_uint32("clip.vision.embedding_length", D)
    w.add_uint32("clip.vision.feed_forward_length", hf["vision_config"]["intermediate_size"])  # (ours pads it)
    w.add_uint32("clip.vision.block_count", depth)
    w.add_uint32("clip.vision.attention.head_count", cfg["vision_heads"])
    w.add_float32("clip.vision.attention.layer_norm_epsilon", cfg["rms_norm_eps"])  # as llama.cpp's converter
    w.add_array("clip.vision.image_mean", [float(x) for x in processor["image_mean"]])
    w.add_array("clip.vision.image_std", [float(x) for x in processor["image_std"]])
    w.add_uint32("clip.vision.spatial_merge_size", cfg["vision_merge"])
    w.add_array("clip.vision.is_deepstack_layers", [b in layers for b in range(depth)])

    def add(name: str, t: np.ndarray) -> None:  # vectors stay f32, as llama.cpp's converter keeps them
        w.add_tensor(name, np.ascontiguousarray(t, np.float32 if t.ndim == 1 else dtype))

    patch = ck.get(f"{v}patch_embed.proj.weight")  # [D, 3, T, P, P]: one 2-D kernel per frame
    add("v.patch_embd.weight", patch[:, :, 0])
    add("v.patch_embd.weight.1", patch[:, :, 1])
    for theirs, ours in TOP_TENSORS.items():  # (the position table stays f32, as llama.cpp's converter keeps it)
        t = ck.get(v + ours)
        if theirs == "v.position_embd.weight":
            w.add_tensor(theirs, t.astype(np.float32))
        else:
            add(theirs, t)
    for b in range(depth):
        for theirs, ours in BLOCK_TENSORS.items():
            for kind in ("weight", "bias"):
                add(f"v.blk.{b}.{theirs}.{kind}", ck.get(f"{v}blocks.{b}.{ours}.{kind}"))
    for k, block in enumerate(layers):  # named by the block they follow
        for theirs, ours in DEEPSTACK_TENSORS.items():
            for kind in ("weight", "bias"):
                add(f"v.deepstack.{block}.{theirs}.{kind}", ck.get(f"{v}deepstack_merger_list.{k}.{ours}.{kind}"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(out + ".partial", out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="a Qwen3-VL-MoE Hugging Face folder")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--type", choices=["f32", "f16"], default="f32")
    a = p.parse_args()
    export_mmproj(a.src, a.out, a.type)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
