"""Write a random-weight MoE checkpoint in Hugging Face format, OLMoE-shaped, for benchmarks.

    python bench/make_synthetic.py OUT_DIR [--layers 16] [--experts 64] [--top-k 8]
        [--hidden 2048] [--intermediate 1024] [--vocab 50304] [--heads 16] [--dtype f16]

Tensors are generated and written one at a time with numpy (no torch), into
shards of about 1 GB with a safetensors index, so a multi-GB model is written
quickly and without holding it in memory. Routing over random weights is close
to uniform: the worst case for an expert cache.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import struct

import numpy as np

FIXTURE_TOKENIZER = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "olmoe")


class ShardWriter:
    """Streams tensors into safetensors shards: header first needs sizes, so tensors are planned up front."""

    def __init__(self, out_dir: str, plan, dtype, shard_bytes: int):
        self.out_dir, self.dtype = out_dir, np.dtype(dtype)
        self.shards, current, size = [], [], 0
        for name, shape in plan:
            nbytes = int(np.prod(shape)) * self.dtype.itemsize
            if current and size + nbytes > shard_bytes:
                self.shards.append(current)
                current, size = [], 0
            current.append((name, shape))
            size += nbytes
        self.shards.append(current)

    def write(self, make):
        n = len(self.shards)
        weight_map, total = {}, 0
        code = {"float16": "F16", "float32": "F32"}[self.dtype.name]
        for i, tensors in enumerate(self.shards):
            fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            header, offset = {}, 0
            for name, shape in tensors:
                nbytes = int(np.prod(shape)) * self.dtype.itemsize
                header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
                offset += nbytes
                weight_map[name] = fname
            total += offset
            blob = json.dumps(header).encode()
            blob += b" " * (-len(blob) % 8)
            with open(os.path.join(self.out_dir, fname), "wb") as f:
                f.write(struct.pack("<Q", len(blob)) + blob)
                for name, shape in tensors:
                    f.write(make(name, shape).astype(self.dtype).tobytes())
            print(f"wrote {fname}")
        with open(os.path.join(self.out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--vocab", type=int, default=384, help="the fixture tokenizer's size by default")
    p.add_argument("--dtype", default="f16", choices=["f16", "f32"])
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    H, I, E = a.hidden, a.intermediate, a.experts
    cfg = {
        "architectures": ["OlmoeForCausalLM"], "model_type": "olmoe",
        "hidden_size": H, "intermediate_size": I, "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads, "num_key_value_heads": a.heads, "num_experts": E,
        "num_experts_per_tok": a.top_k, "vocab_size": a.vocab, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "norm_topk_prob": False, "tie_word_embeddings": False,
        "hidden_act": "silu", "clip_qkv": None, "eos_token_id": 2, "bos_token_id": 0,
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(os.path.join(FIXTURE_TOKENIZER, name), a.out)

    plan = [("model.embed_tokens.weight", (a.vocab, H))]
    for l in range(a.layers):
        p_ = f"model.layers.{l}"
        plan += [(f"{p_}.input_layernorm.weight", (H,)), (f"{p_}.post_attention_layernorm.weight", (H,)),
                 (f"{p_}.self_attn.q_norm.weight", (H,)), (f"{p_}.self_attn.k_norm.weight", (H,))]
        plan += [(f"{p_}.self_attn.{x}_proj.weight", (H, H)) for x in "qkvo"]
        plan.append((f"{p_}.mlp.gate.weight", (E, H)))
        for e in range(E):
            plan += [(f"{p_}.mlp.experts.{e}.gate_proj.weight", (I, H)), (f"{p_}.mlp.experts.{e}.up_proj.weight", (I, H)),
                     (f"{p_}.mlp.experts.{e}.down_proj.weight", (H, I))]
    plan += [("model.norm.weight", (H,)), ("lm_head.weight", (a.vocab, H))]
    rng = np.random.default_rng(a.seed)

    def make(name, shape):
        if len(shape) == 1:
            return np.ones(shape, np.float32)
        return (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[1]))

    ShardWriter(a.out, plan, np.float16 if a.dtype == "f16" else np.float32, 1 << 30).write(make)


if __name__ == "__main__":
    main()
