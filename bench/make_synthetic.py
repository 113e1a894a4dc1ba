"""Write a random-weight MoE checkpoint in Hugging Face format, OLMoE-shaped, for benchmarks.

    python bench/make_synthetic.py OUT_DIR [--layers 16] [--experts 64] [--top-k 8]
        [--hidden 2048] [--intermediate 1024] [--vocab 50304] [--heads 16] [--dtype f16]
    python bench/make_synthetic.py OUT_DIR --arch qwen3_moe --routing realistic [--layers 4]
    python bench/make_synthetic.py OUT_DIR --arch gpt_oss [--layers 4]
    python bench/make_synthetic.py OUT_DIR --arch deepseek_v2 [--layers 4]
    python bench/make_synthetic.py OUT_DIR --arch gemma4 [--layers 6]
    python bench/make_synthetic.py OUT_DIR --arch qwen3_5_moe --routing realistic [--layers 8]

--arch gpt_oss writes gpt-oss-20b's shape (hidden 2880, 64 query and 8 KV heads of 64, 32 experts
of width 2880, top-4, window 128 on alternate layers, YaRN) as the hub ships it: experts as MXFP4
blocks and scales, the rest 16-bit; --layers, --experts, --top-k and --vocab still apply.
--arch deepseek_v2 writes DeepSeek-V2-Lite's shape (hidden 2048, 16 heads of latent attention:
kv_lora_rank 512, qk_nope 128, qk_rope 64, v 128; a dense first layer 10944 wide; 64 experts of
width 1408, top-6, 2 shared; YaRN factor 40 with mscale_all_dim), per expert as the hub ships it;
--layers, --experts, --top-k and --vocab apply (the defaults are V2-Lite's when not given).
--arch gemma4 writes gemma-4-26B-A4B's shape (hidden 2816; five sliding layers of 8 KV heads of 256
with a 1024 window to each global layer of 2 KV heads of 512 whose values come from the keys,
proportional rope on a quarter of them; a 2112-wide gelu MLP beside 128 experts of width 704,
top-8; soft-capped logits), experts stacked as transformers stores them.

--arch qwen3_5_moe writes Qwen3.5/3.6-35B-A3B's shape (hidden 2048; three Gated DeltaNet layers of 16
key and 32 value heads of 128, a 4-tap convolution, to each gated full-attention layer of 16 query and
2 KV heads of 256 with a quarter of each rotating; 256 experts of width 512, top-8, and a 512-wide
gated shared expert), experts stacked as the hub ships them; --layers, --experts, --top-k, --vocab and
--routing apply (realistic: as for qwen3_moe).

--arch qwen3_vl_moe writes Qwen3-VL-30B-A3B's shape: the Qwen3-30B-A3B text model below (experts
stacked as the hub ships them, [E, hidden, 2I] and [E, I, hidden]) under model.language_model, and its
vision tower (27 blocks of 1152 with 16 heads and a 4304-wide MLP, 16-pixel patches over 2 frames,
2x2 merging, a 48x48 position table, DeepStack after blocks 8, 16 and 24) with the hub's
preprocessor_config.json; image tokens are ids 381-383 of the fixture tokenizer's vocabulary.

--arch qwen3_moe writes Qwen3-30B-A3B's shape (hidden 2048, 32 query and 4 KV heads of 128, 128
experts of width 768, top-8), per expert as the hub ships it.

--routing realistic (OLMoE and Qwen3 shapes) makes routing that a cache cannot flatter itself on: residual
branches scaled down (the stream stays each token's own), sharper attention (a token draws on a few
earlier ones rather than on the context's mean, which all tokens would share), routers balanced
over the token frequencies of --balance-text (zero mean and equal spread of every expert's logit)
and chained from layer to layer (experts shuffled): usage close to balanced in every layer while
choices vary with content and correlate across neighbouring layers. bench/routing_stats.py
measures both modes against the trained demo model (bench/RESULTS.md).

Tensors are generated and written one at a time with numpy (no torch), into
shards of about 1 GB with a safetensors index, so a multi-GB model is written
quickly and without holding it in memory. Routing over the default random weights is
concentrated in deep layers and repeats from token to token (bench/RESULTS.md), which flatters
any cache.
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
        """plan: (name, shape) or (name, shape, dtype) entries; dtype is the default."""
        self.out_dir = out_dir
        self.shards, current, size = [], [], 0
        for name, shape, *own in plan:
            kind = np.dtype(own[0] if own else dtype)
            nbytes = int(np.prod(shape)) * kind.itemsize
            if current and size + nbytes > shard_bytes:
                self.shards.append(current)
                current, size = [], 0
            current.append((name, shape, kind))
            size += nbytes
        self.shards.append(current)

    def write(self, make):
        n = len(self.shards)
        weight_map, total = {}, 0
        codes = {"float16": "F16", "float32": "F32", "uint8": "U8"}
        for i, tensors in enumerate(self.shards):
            fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            header, offset = {}, 0
            for name, shape, kind in tensors:
                nbytes = int(np.prod(shape)) * kind.itemsize
                header[name] = {"dtype": codes[kind.name], "shape": list(shape),
                                "data_offsets": [offset, offset + nbytes]}
                offset += nbytes
                weight_map[name] = fname
            total += offset
            blob = json.dumps(header).encode()
            blob += b" " * (-len(blob) % 8)
            with open(os.path.join(self.out_dir, fname), "wb") as f:
                f.write(struct.pack("<Q", len(blob)) + blob)
                for name, shape, kind in tensors:
                    f.write(make(name, shape).astype(kind).tobytes())
            print(f"wrote {fname}")
        with open(os.path.join(self.out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--experts", type=int, default=None,
                   help="64 (olmoe, deepseek_v2), 32 (gpt_oss), 128 (qwen3_moe, gemma4)")
    p.add_argument("--top-k", type=int, default=None, help="8 (olmoe, qwen3_moe, gemma4), 4 (gpt_oss) or 6 (deepseek_v2)")
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--vocab", type=int, default=384, help="the fixture tokenizer's size by default")
    p.add_argument("--dtype", default="f16", choices=["f16", "f32"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", default="olmoe", choices=["olmoe", "qwen3_moe", "gpt_oss", "deepseek_v2", "gemma4",
                                                      "qwen3_5_moe", "qwen3_vl_moe"])
    p.add_argument("--routing", default="random", choices=["random", "realistic"],
                   help="olmoe, qwen3_moe: realistic scales the residual branches and chains the routers (see the doc)")
    p.add_argument("--residual-scale", type=float, default=0.1, help="realistic: o_proj and expert down scale")
    p.add_argument("--router-chain", type=float, default=0.95,
                   help="realistic: share of each router carried from the previous layer's (experts shuffled)")
    p.add_argument("--attention-sharpness", type=float, default=4.0,
                   help="realistic: q_norm and k_norm weights sqrt(this): attention logits this much larger")
    p.add_argument("--balance-text", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                          "README.md"),
                   help="realistic: the text whose token frequencies the routers are balanced on")
    a = p.parse_args()
    if a.top_k is None:
        a.top_k = {"olmoe": 8, "qwen3_moe": 8, "gpt_oss": 4, "deepseek_v2": 6, "gemma4": 8, "qwen3_5_moe": 8,
                   "qwen3_vl_moe": 8}[a.arch]
    if a.experts is None:
        a.experts = {"olmoe": 64, "qwen3_moe": 128, "gpt_oss": 32, "deepseek_v2": 64, "gemma4": 128,
                     "qwen3_5_moe": 256, "qwen3_vl_moe": 128}[a.arch]
    os.makedirs(a.out, exist_ok=True)
    if a.arch == "gpt_oss":
        return write_gpt_oss(a)
    if a.arch == "deepseek_v2":
        return write_deepseek_v2(a)
    if a.arch == "gemma4":
        return write_gemma4(a)
    if a.arch == "qwen3_moe":
        return write_qwen3_moe(a)
    if a.arch == "qwen3_5_moe":
        return write_qwen3_5_moe(a)
    if a.arch == "qwen3_vl_moe":
        return write_qwen3_vl_moe(a)
    write_olmoe(a)


def weight_maker(a, rng):
    """make(name, shape) for the OLMoE- and Qwen3-shaped writers: every matrix N(0, 1/fan-in) and
    norm weights 1 (--routing random); --routing realistic then scales the residual branches,
    sharpens attention through the q/k norms and balances and chains the routers (module doc)."""
    previous_router = []
    embedding_stats = []  # (mean, covariance) of the normalised embeddings over the balance text

    def make(name, shape):
        if len(shape) == 1:
            sharp = a.routing == "realistic" and name.endswith(("q_norm.weight", "k_norm.weight"))
            # sharper attention: each token draws on a few earlier ones, not the context's mean
            return np.full(shape, np.sqrt(a.attention_sharpness) if sharp else 1.0, np.float32)
        w = rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[1])
        if a.routing == "random":
            return w
        if name == "model.embed_tokens.weight":
            embedding_stats[:] = token_statistics(w, a.balance_text)
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            # residual branches small against the token's own embedding, as in a trained network:
            # the stream stays the token's own instead of drifting to one shared direction
            return w * a.residual_scale
        if name.endswith("mlp.gate.weight"):
            if previous_router:  # the previous router, its experts shuffled, carried over in part
                carried = previous_router[0][rng.permutation(shape[0])]
                w = a.router_chain * carried + np.sqrt(1 - a.router_chain ** 2) * w
            previous_router[:] = [w]
            return balanced_router(w, *embedding_stats)
        return w

    return make


def write_config_and_tokenizer(a, cfg) -> None:
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(os.path.join(FIXTURE_TOKENIZER, name), a.out)


def write_olmoe(a) -> None:
    """OLMoE's layout (per-expert tensors, q/k norms over the whole projection) at --hidden etc."""
    H, I, E = a.hidden, a.intermediate, a.experts
    cfg = {
        "architectures": ["OlmoeForCausalLM"], "model_type": "olmoe",
        "hidden_size": H, "intermediate_size": I, "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads, "num_key_value_heads": a.heads, "num_experts": E,
        "num_experts_per_tok": a.top_k, "vocab_size": a.vocab, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "norm_topk_prob": False, "tie_word_embeddings": False,
        "hidden_act": "silu", "clip_qkv": None, "eos_token_id": 2, "bos_token_id": 0,
    }
    write_config_and_tokenizer(a, cfg)

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
    make = weight_maker(a, np.random.default_rng(a.seed))
    ShardWriter(a.out, plan, np.float16 if a.dtype == "f16" else np.float32, 1 << 30).write(make)


def qwen3_layer_plan(p_: str, H: int, heads: int, kv: int, hd: int, E: int) -> list:
    """A Qwen3-MoE decoder layer's tensors under the prefix p_, but for its experts: norms, attention
    with per-head q/k norms, the router."""
    at = f"{p_}.self_attn"
    return [(f"{p_}.input_layernorm.weight", (H,)), (f"{p_}.post_attention_layernorm.weight", (H,)),
            (f"{at}.q_norm.weight", (hd,)), (f"{at}.k_norm.weight", (hd,)),
            (f"{at}.q_proj.weight", (heads * hd, H)), (f"{at}.k_proj.weight", (kv * hd, H)),
            (f"{at}.v_proj.weight", (kv * hd, H)), (f"{at}.o_proj.weight", (H, heads * hd)),
            (f"{p_}.mlp.gate.weight", (E, H))]


def write_qwen3_moe(a) -> None:
    """Qwen3-30B-A3B's widths (hidden 2048, 32 query and 4 KV heads of 128 with per-head q/k norms,
    128 experts of width 768, top-8, renormalised), per expert as the hub ships it."""
    H, I, E, V, heads, kv, hd = 2048, 768, a.experts, a.vocab, 32, 4, 128
    cfg = {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": H,
        "intermediate_size": 6144, "moe_intermediate_size": I, "num_hidden_layers": a.layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd, "num_experts": E,
        "num_experts_per_tok": a.top_k, "norm_topk_prob": True, "vocab_size": V, "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False, "hidden_act": "silu",
        "decoder_sparse_step": 1, "mlp_only_layers": [], "eos_token_id": 2, "bos_token_id": 0,
    }
    write_config_and_tokenizer(a, cfg)
    plan = [("model.embed_tokens.weight", (V, H))]
    for l in range(a.layers):
        p_ = f"model.layers.{l}"
        plan += qwen3_layer_plan(p_, H, heads, kv, hd, E)
        for e in range(E):
            plan += [(f"{p_}.mlp.experts.{e}.gate_proj.weight", (I, H)), (f"{p_}.mlp.experts.{e}.up_proj.weight", (I, H)),
                     (f"{p_}.mlp.experts.{e}.down_proj.weight", (H, I))]
    plan += [("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]
    ShardWriter(a.out, plan, np.float16, 1 << 30).write(weight_maker(a, np.random.default_rng(a.seed)))


def write_qwen3_5_moe(a) -> None:
    """Qwen3.5/3.6-35B-A3B's widths (module doc): Gated DeltaNet layers, every fourth layer gated
    full attention, 256 stacked experts and a gated shared expert; its 1 + w norms at 0."""
    H, I, S, E, V = 2048, 512, 512, a.experts, a.vocab
    heads, kv, hd, Nk, Nv, dk, dv, Kc = 16, 2, 256, 16, 32, 128, 128, 4
    types = ["full_attention" if (l + 1) % 4 == 0 else "linear_attention" for l in range(a.layers)]
    cfg = {
        "architectures": ["Qwen3_5MoeForCausalLM"], "model_type": "qwen3_5_moe_text", "hidden_size": H,
        "num_hidden_layers": a.layers, "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd,
        "layer_types": types, "linear_conv_kernel_dim": Kc, "linear_num_key_heads": Nk,
        "linear_num_value_heads": Nv, "linear_key_head_dim": dk, "linear_value_head_dim": dv,
        "num_experts": E, "num_experts_per_tok": a.top_k, "moe_intermediate_size": I,
        "shared_expert_intermediate_size": S, "vocab_size": V, "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "hidden_act": "silu", "eos_token_id": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25},
    }
    write_config_and_tokenizer(a, cfg)
    plan = [("model.embed_tokens.weight", (V, H))]
    for l, kind in enumerate(types):
        p_ = f"model.layers.{l}"
        plan += [(f"{p_}.input_layernorm.weight", (H,)), (f"{p_}.post_attention_layernorm.weight", (H,))]
        if kind == "full_attention":
            at = f"{p_}.self_attn"
            plan += [(f"{at}.q_proj.weight", (heads * 2 * hd, H)), (f"{at}.k_proj.weight", (kv * hd, H)),
                     (f"{at}.v_proj.weight", (kv * hd, H)), (f"{at}.o_proj.weight", (H, heads * hd)),
                     (f"{at}.q_norm.weight", (hd,)), (f"{at}.k_norm.weight", (hd,))]
        else:
            la = f"{p_}.linear_attn"
            plan += [(f"{la}.in_proj_qkv.weight", (2 * Nk * dk + Nv * dv, H)), (f"{la}.in_proj_z.weight", (Nv * dv, H)),
                     (f"{la}.in_proj_b.weight", (Nv, H)), (f"{la}.in_proj_a.weight", (Nv, H)),
                     (f"{la}.conv1d.weight", (2 * Nk * dk + Nv * dv, 1, Kc)), (f"{la}.dt_bias", (Nv,)),
                     (f"{la}.A_log", (Nv,)), (f"{la}.norm.weight", (dv,)), (f"{la}.out_proj.weight", (H, Nv * dv))]
        m = f"{p_}.mlp"
        plan += [(f"{m}.gate.weight", (E, H)), (f"{m}.experts.gate_up_proj", (E, 2 * I, H)),
                 (f"{m}.experts.down_proj", (E, H, I)), (f"{m}.shared_expert.gate_proj.weight", (S, H)),
                 (f"{m}.shared_expert.up_proj.weight", (S, H)), (f"{m}.shared_expert.down_proj.weight", (H, S)),
                 (f"{m}.shared_expert_gate.weight", (1, H))]
    plan += [("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]
    rng = np.random.default_rng(a.seed)
    common = weight_maker(a, rng)

    def make(name, shape):
        if name.endswith("A_log"):
            return np.log(rng.uniform(1, 16, shape)).astype(np.float32)  # transformers' initialisation
        if name.endswith(("dt_bias", "linear_attn.norm.weight")):
            return np.ones(shape, np.float32)
        if name.endswith("norm.weight"):  # 1 + w norms: 0 is a plain unit weight
            return np.zeros(shape, np.float32)
        if name.endswith("conv1d.weight"):
            return rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[-1])
        if name.endswith("out_proj.weight"):  # a residual branch, scaled as common scales o_proj
            return common(name[:-len("out_proj.weight")] + "o_proj.weight", shape)
        if len(shape) == 3:  # stacked experts: each N(0, 1/fan-in), the down ones scaled as common's
            w = rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[2])
            return w * a.residual_scale if a.routing == "realistic" and name.endswith("down_proj") else w
        return common(name, shape)

    ShardWriter(a.out, plan, np.float16, 1 << 30).write(make)


def write_qwen3_vl_moe(a) -> None:
    """Qwen3-VL-30B-A3B's widths (module doc): Qwen3-30B-A3B's text model with stacked hub experts,
    and the vision tower; its LayerNorms at 1, biases at 0, the position table small."""
    H, I, E, V, heads, kv, hd = 2048, 768, a.experts, a.vocab, 32, 4, 128
    D, F, depth, P, side, deepstack = 1152, 4304, 27, 16, 48, [8, 16, 24]
    text = {"hidden_size": H, "intermediate_size": 6144, "moe_intermediate_size": I, "num_hidden_layers": a.layers,
            "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd, "num_experts": E,
            "num_experts_per_tok": a.top_k, "vocab_size": V, "max_position_embeddings": 262144, "rms_norm_eps": 1e-6,
            "rope_theta": 5000000.0, "hidden_act": "silu", "decoder_sparse_step": 1, "mlp_only_layers": [],
            "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True}}
    vision = {"depth": depth, "hidden_size": D, "intermediate_size": F, "num_heads": 16, "patch_size": P,
              "temporal_patch_size": 2, "spatial_merge_size": 2, "in_channels": 3, "out_hidden_size": H,
              "num_position_embeddings": side * side, "deepstack_visual_indexes": deepstack,
              "hidden_act": "gelu_pytorch_tanh"}
    cfg = {"architectures": ["Qwen3VLMoeForConditionalGeneration"], "model_type": "qwen3_vl_moe",
           "text_config": text, "vision_config": vision, "tie_word_embeddings": False, "eos_token_id": 2,
           "vision_start_token_id": 381, "vision_end_token_id": 382, "image_token_id": 383, "video_token_id": 380}
    write_config_and_tokenizer(a, cfg)
    with open(os.path.join(a.out, "preprocessor_config.json"), "w") as f:
        json.dump({"size": {"shortest_edge": 65536, "longest_edge": 16777216}, "patch_size": P,
                   "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
                   "image_processor_type": "Qwen2VLImageProcessorFast"}, f, indent=1)
    t = "model.language_model"
    plan = [(f"{t}.embed_tokens.weight", (V, H))]
    for l in range(a.layers):
        p_ = f"{t}.layers.{l}"
        plan += qwen3_layer_plan(p_, H, heads, kv, hd, E) + [(f"{p_}.mlp.experts.gate_up_proj", (E, H, 2 * I)),
                                                             (f"{p_}.mlp.experts.down_proj", (E, I, H))]
    plan += [(f"{t}.norm.weight", (H,)), ("lm_head.weight", (V, H))]
    v = "model.visual"
    plan += [(f"{v}.patch_embed.proj.weight", (D, 3, 2, P, P)), (f"{v}.patch_embed.proj.bias", (D,)),
             (f"{v}.pos_embed.weight", (side * side, D))]
    for b in range(depth):
        s_ = f"{v}.blocks.{b}"
        plan += [(f"{s_}.{n}.{k}", (D,)) for n in ("norm1", "norm2") for k in ("weight", "bias")]
        plan += [(f"{s_}.attn.qkv.weight", (3 * D, D)), (f"{s_}.attn.qkv.bias", (3 * D,)),
                 (f"{s_}.attn.proj.weight", (D, D)), (f"{s_}.attn.proj.bias", (D,)),
                 (f"{s_}.mlp.linear_fc1.weight", (F, D)), (f"{s_}.mlp.linear_fc1.bias", (F,)),
                 (f"{s_}.mlp.linear_fc2.weight", (D, F)), (f"{s_}.mlp.linear_fc2.bias", (D,))]
    for m_, norm in [(f"{v}.merger", D)] + [(f"{v}.deepstack_merger_list.{k}", 4 * D) for k in range(len(deepstack))]:
        plan += [(f"{m_}.norm.weight", (norm,)), (f"{m_}.norm.bias", (norm,)),
                 (f"{m_}.linear_fc1.weight", (4 * D, 4 * D)), (f"{m_}.linear_fc1.bias", (4 * D,)),
                 (f"{m_}.linear_fc2.weight", (H, 4 * D)), (f"{m_}.linear_fc2.bias", (H,))]
    rng = np.random.default_rng(a.seed)
    common = weight_maker(a, rng)

    def make(name, shape):
        if name.startswith(v):  # the tower: N(0, 1/fan-in) matrices, unit norms, zero biases
            if name.endswith("bias"):
                return np.zeros(shape, np.float32)
            if len(shape) == 1:
                return np.ones(shape, np.float32)
            fan_in = int(np.prod(shape[1:])) if not name.endswith("pos_embed.weight") else 1.0 / 0.02 ** 2
            return rng.standard_normal(shape, dtype=np.float32) / np.sqrt(fan_in)
        name = name.replace("model.language_model.", "model.")  # the names weight_maker knows
        if len(shape) == 3:  # hub-stacked experts: N(0, 1/fan-in), fan-in their middle axis
            w = rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[1])
            return w * a.residual_scale if a.routing == "realistic" and name.endswith("down_proj") else w
        return common(name, shape)

    ShardWriter(a.out, plan, np.float16, 1 << 30).write(make)


def token_statistics(embedding: np.ndarray, text_file: str):
    """Mean and covariance of the RMS-normalised embeddings of the tokens of text_file (the fixture
    tokenizer's), weighted by how often each occurs: what a router sees while the residual stream
    is still mostly the token's own embedding."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(FIXTURE_TOKENIZER, "tokenizer.json"))
    with open(text_file, encoding="utf-8") as f:
        ids = [i for i in tok.encode(f.read()).ids if i < len(embedding)]
    x = embedding[ids].astype(np.float64)
    x /= np.sqrt((x ** 2).mean(1, keepdims=True))
    return x.mean(0), np.cov(x, rowvar=False)


def balanced_router(w: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Router rows that give every expert the same mean (0) and spread of logits over the text's
    tokens, so no expert wins by its offset or its scale: a trained router's load balance."""
    w = w.astype(np.float64)
    w -= np.outer(w @ mean, mean) / (mean @ mean)
    spread = np.sqrt(np.einsum("eh,hk,ek->e", w, cov, w))
    return (w / spread[:, None] / np.sqrt(w.shape[1])).astype(np.float32)


def write_gpt_oss(a) -> None:
    """gpt-oss-20b's widths, hub layout: MXFP4 experts (random codes, exponents giving weights
    of about 1/sqrt(fan-in)), 16-bit attention, router, norms, biases, sinks."""
    H, I, E, V, heads, kv, hd = 2880, 2880, a.experts, a.vocab, 64, 8, 64
    cfg = {
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": H, "intermediate_size": I,
        "num_hidden_layers": a.layers, "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd,
        "num_local_experts": E, "num_experts_per_tok": a.top_k, "vocab_size": V, "sliding_window": 128,
        "layer_types": ["sliding_attention" if l % 2 == 0 else "full_attention" for l in range(a.layers)],
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "attention_bias": True,
        "swiglu_limit": 7.0, "tie_word_embeddings": False, "hidden_act": "silu", "eos_token_id": 2,
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0,
                            "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 4096},
        "quantization_config": {"quant_method": "mxfp4"},
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    fixture = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "gpt_oss")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(os.path.join(fixture, name), a.out)
    u8 = np.uint8
    plan = [("model.embed_tokens.weight", (V, H))]
    for l in range(a.layers):
        p_, x = f"model.layers.{l}", f"model.layers.{l}.mlp.experts"
        plan += [(f"{p_}.input_layernorm.weight", (H,)), (f"{p_}.post_attention_layernorm.weight", (H,)),
                 (f"{p_}.self_attn.sinks", (heads,))]
        for proj, rows, cols in (("q", heads * hd, H), ("k", kv * hd, H), ("v", kv * hd, H), ("o", H, heads * hd)):
            plan += [(f"{p_}.self_attn.{proj}_proj.weight", (rows, cols)), (f"{p_}.self_attn.{proj}_proj.bias", (rows,))]
        plan += [(f"{p_}.mlp.router.weight", (E, H)), (f"{p_}.mlp.router.bias", (E,)),
                 (f"{x}.gate_up_proj_blocks", (E, 2 * I, H // 32, 16), u8), (f"{x}.gate_up_proj_scales", (E, 2 * I, H // 32), u8),
                 (f"{x}.gate_up_proj_bias", (E, 2 * I)),
                 (f"{x}.down_proj_blocks", (E, H, I // 32, 16), u8), (f"{x}.down_proj_scales", (E, H, I // 32), u8),
                 (f"{x}.down_proj_bias", (E, H))]
    plan += [("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]
    rng = np.random.default_rng(a.seed)

    def make(name, shape):
        if name.endswith("_blocks"):
            return rng.integers(0, 256, shape, dtype=np.uint8)
        if name.endswith("_scales"):  # E2M1 codes drawn uniformly have RMS 2.9: 2^-7 x that ~ 1/sqrt(2880)
            return rng.integers(119, 122, shape, dtype=np.uint8)
        if name.endswith(("bias", "sinks")):
            return np.zeros(shape, np.float32)
        if len(shape) == 1:
            return np.ones(shape, np.float32)
        return rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[1])

    ShardWriter(a.out, plan, np.float16, 1 << 30).write(make)


def write_deepseek_v2(a) -> None:
    """DeepSeek-V2-Lite's widths, hub layout (per-expert tensors), 16-bit."""
    H, I, D, E, V, heads = 2048, 1408, 10944, a.experts, a.vocab, 16
    R, nope, rope, vd = 512, 128, 64, 128
    cfg = {
        "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "hidden_size": H,
        "intermediate_size": D, "moe_intermediate_size": I, "num_hidden_layers": a.layers, "num_attention_heads": heads,
        "num_key_value_heads": heads, "n_routed_experts": E, "n_shared_experts": 2, "num_experts_per_tok": a.top_k,
        "first_k_dense_replace": 1, "kv_lora_rank": R, "q_lora_rank": None, "qk_nope_head_dim": nope,
        "qk_rope_head_dim": rope, "v_head_dim": vd, "topk_method": "greedy", "routed_scaling_factor": 1.0,
        "norm_topk_prob": False, "vocab_size": V, "max_position_embeddings": 163840, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False, "hidden_act": "silu", "eos_token_id": 2, "bos_token_id": 0,
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "beta_fast": 32.0,
                            "beta_slow": 1.0, "mscale": 0.707, "mscale_all_dim": 0.707,
                            "original_max_position_embeddings": 4096},
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(os.path.join(FIXTURE_TOKENIZER, name), a.out)
    plan = [("model.embed_tokens.weight", (V, H))]
    for l in range(a.layers):
        p_, at = f"model.layers.{l}", f"model.layers.{l}.self_attn"
        plan += [(f"{p_}.input_layernorm.weight", (H,)), (f"{p_}.post_attention_layernorm.weight", (H,)),
                 (f"{at}.q_proj.weight", (heads * (nope + rope), H)), (f"{at}.kv_a_proj_with_mqa.weight", (R + rope, H)),
                 (f"{at}.kv_a_layernorm.weight", (R,)), (f"{at}.kv_b_proj.weight", (heads * (nope + vd), R)),
                 (f"{at}.o_proj.weight", (H, heads * vd))]
        mlps = [(f"{p_}.mlp", D)] if l == 0 else [(f"{p_}.mlp.shared_experts", 2 * I)] + [
            (f"{p_}.mlp.experts.{e}", I) for e in range(E)]
        if l:
            plan.append((f"{p_}.mlp.gate.weight", (E, H)))
        for m, width in mlps:
            plan += [(f"{m}.gate_proj.weight", (width, H)), (f"{m}.up_proj.weight", (width, H)),
                     (f"{m}.down_proj.weight", (H, width))]
    plan += [("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]
    rng = np.random.default_rng(a.seed)

    def make(name, shape):
        if len(shape) == 1:
            return np.ones(shape, np.float32)
        return rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[1])

    ShardWriter(a.out, plan, np.float16, 1 << 30).write(make)


def write_gemma4(a) -> None:
    """gemma-4-26B-A4B's widths, transformers' layout (Gemma4ForCausalLM, stacked experts), 16-bit."""
    H, I, D, E, V, heads, hd, ghd, kv, gkv = 2816, 704, 2112, a.experts, a.vocab, 16, 256, 512, 8, 2
    types = ["sliding_attention" if (l + 1) % 6 else "full_attention" for l in range(a.layers)]
    types[-1] = "full_attention"
    cfg = {
        "architectures": ["Gemma4ForCausalLM"], "model_type": "gemma4_text", "hidden_size": H,
        "intermediate_size": D, "moe_intermediate_size": I, "num_hidden_layers": a.layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd, "global_head_dim": ghd,
        "num_global_key_value_heads": gkv, "attention_k_eq_v": True, "enable_moe_block": True, "num_experts": E,
        "top_k_experts": a.top_k, "hidden_size_per_layer_input": 0, "num_kv_shared_layers": 0,
        "layer_types": types, "sliding_window": 1024, "final_logit_softcapping": 30.0, "vocab_size": V,
        "max_position_embeddings": 262144, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
        "hidden_activation": "gelu_pytorch_tanh", "eos_token_id": 2, "bos_token_id": 0,
        "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                               "rope_theta": 1000000.0}},
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(os.path.join(FIXTURE_TOKENIZER, name), a.out)
    plan = [("model.embed_tokens.weight", (V, H))]
    for l, kind in enumerate(types):
        p_, at = f"model.layers.{l}", f"model.layers.{l}.self_attn"
        d, k = (hd, kv) if kind == "sliding_attention" else (ghd, gkv)
        plan += [(f"{p_}.{n}.weight", (H,)) for n in (
            "input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm",
            "post_feedforward_layernorm_1", "pre_feedforward_layernorm_2", "post_feedforward_layernorm_2")]
        plan += [(f"{p_}.layer_scalar", (1,)), (f"{at}.q_proj.weight", (heads * d, H)),
                 (f"{at}.k_proj.weight", (k * d, H)), (f"{at}.o_proj.weight", (H, heads * d)),
                 (f"{at}.q_norm.weight", (d,)), (f"{at}.k_norm.weight", (d,))]
        if kind == "sliding_attention":
            plan.append((f"{at}.v_proj.weight", (k * d, H)))
        plan += [(f"{p_}.mlp.gate_proj.weight", (D, H)), (f"{p_}.mlp.up_proj.weight", (D, H)),
                 (f"{p_}.mlp.down_proj.weight", (H, D)), (f"{p_}.router.proj.weight", (E, H)),
                 (f"{p_}.router.scale", (H,)), (f"{p_}.router.per_expert_scale", (E,)),
                 (f"{p_}.experts.gate_up_proj", (E, 2 * I, H)), (f"{p_}.experts.down_proj", (E, H, I))]
    plan.append(("model.norm.weight", (H,)))
    rng = np.random.default_rng(a.seed)

    def make(name, shape):
        if len(shape) == 1:
            return np.ones(shape, np.float32)
        return rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[-1])

    ShardWriter(a.out, plan, np.float16, 1 << 30).write(make)


if __name__ == "__main__":
    main()
