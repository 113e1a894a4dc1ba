"""A container back to a transformers folder (its weights decoded to float32), for the tools that
need a model's checkpoint: `edgemoe convert --prune-experts/--merge-experts/--bits auto` and the
bench that compares them on the shipped demo model, whose float32 checkpoint is not in the
repository (tools/train_demo_model.py rebuilds it in hours; this takes seconds).

    python tools/export_hf.py edgemoe/models/demo.emoe -o /tmp/demo-hf

Qwen3-MoE containers only (the demo model's architecture). The weights are the container's, not
the original checkpoint's: an 8-bit container gives its 8-bit values. Checked before returning:
the folder converts back to the container's config, and at the container's widths to the same
logits (requantizing decoded 8-bit values reproduces them).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from edgemoe.convert.hf import ARCHS, resident_plan  # noqa: E402
from edgemoe.convert.low_bit_copy import _payload  # noqa: E402
from edgemoe.format import quant  # noqa: E402
from edgemoe.format.container import EXPERT_PARTS, open_container  # noqa: E402
from edgemoe.format.model_config import moe_layers  # noqa: E402


def hf_config(cfg):
    from transformers import Qwen3MoeConfig

    if cfg["architecture"] != "qwen3_moe" or cfg["dense_layers"] or cfg["rope_scaling"] != "none":
        raise SystemExit("export_hf writes plain Qwen3-MoE containers only")
    if cfg["router_experts"]:
        raise SystemExit("export_hf cannot write a merged container: transformers has no expert map")
    c = Qwen3MoeConfig(
        vocab_size=cfg["vocab"], hidden_size=cfg["hidden"], intermediate_size=cfg["expert_intermediate"],
        num_hidden_layers=cfg["n_layers"], num_attention_heads=cfg["n_heads"], num_key_value_heads=cfg["n_kv_heads"],
        head_dim=cfg["head_dim"], hidden_act="silu", max_position_embeddings=cfg["max_position"],
        rms_norm_eps=cfg["rms_norm_eps"], tie_word_embeddings=cfg["tie_embeddings"],
        rope_parameters={"rope_type": "default", "rope_theta": cfg["rope_theta"]}, attention_bias=False,
        use_sliding_window=False, decoder_sparse_step=1, moe_intermediate_size=cfg["expert_intermediate"],
        num_experts_per_tok=cfg["top_k"], num_experts=cfg["n_experts"], norm_topk_prob=cfg["norm_topk_prob"],
        mlp_only_layers=[])
    c.architectures = ["Qwen3MoeForCausalLM"]
    return c


def export(path: str, out: str) -> None:
    from safetensors.numpy import save_file

    c = open_container(path)
    cfg = c.config
    hf = hf_config(cfg)
    os.makedirs(out, exist_ok=True)
    hf.save_pretrained(out)
    arch = next(a for a in ARCHS if a.name == "qwen3_moe")
    tensors = {}
    with open(path, "rb") as f:
        for r in resident_plan(cfg, arch, "mlp"):
            t = c.tensors[r.name]
            f.seek(c.sections["resident"]["offset"] + t["offset"])
            raw = np.frombuffer(f.read(t["nbytes"]), np.uint8)
            shape = tuple(t["shape"]) if len(t["shape"]) == 2 else (1, int(np.prod(t["shape"])))
            tensors[r.source] = quant.dequantize(raw, quant.CODES[t["type"]], shape).reshape(r.shape)
        for l in moe_layers(cfg):
            for e in range(cfg["n_experts"]):
                blob = c.experts[l][e]
                payload = _payload(f, blob, f"expert {l}/{e}")
                for part, name in zip(EXPERT_PARTS, ("gate_proj", "up_proj", "down_proj")):
                    p = blob["parts"][part]
                    raw = np.frombuffer(payload, np.uint8, p["nbytes"], p["offset"])
                    tensors[f"model.layers.{l}.mlp.experts.{e}.{name}.weight"] = \
                        quant.dequantize(raw, quant.CODES[blob["type"]], tuple(p["shape"]))
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}, os.path.join(out, "model.safetensors"))
    tok = c.manifest["tokenizer"]
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(tok["tokenizer_json"])
    for name in ("tokenizer_config", "generation_config"):
        with open(os.path.join(out, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(tok.get(name) or {}, f, ensure_ascii=False, indent=1)


def check(path: str, out: str) -> float:
    """The folder converted back at the container's widths: its config and logits (max |difference|)."""
    import tempfile

    import edgemoe
    from edgemoe.convert import convert_hf

    c = open_container(path)
    q = c.manifest["quantization"]
    with tempfile.TemporaryDirectory() as tmp:
        back = os.path.join(tmp, "back.emoe")
        convert_hf(out, back, bits=q["experts"].replace("q", ""), resident_bits=q["resident"].replace("q", ""),
                   progress=False)
        got = dict(open_container(back).config)
        if got != dict(c.config):
            diff = {k: (got.get(k), c.config.get(k)) for k in set(got) | set(c.config) if got.get(k) != c.config.get(k)}
            raise SystemExit(f"the exported folder converts to another config: {diff}")
        ids = list(range(1, 65))
        a = edgemoe.load(path, kv_cache="f32").logits(ids)
        b = edgemoe.load(back, kv_cache="f32").logits(ids)
        return float(np.abs(a - b).max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("container")
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    export(a.container, a.output)
    print(f"wrote {a.output}; converted back, logits within {check(a.container, a.output):.2e} of the container")


if __name__ == "__main__":
    main()
