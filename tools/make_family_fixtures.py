#!/usr/bin/env python3
"""Build the tiny random-weight fixtures of the newer model families and rope types under
tests/fixtures/ (the first four architectures' fixtures come from tools/make_fixtures.py).

    python tools/make_family_fixtures.py --out tests/fixtures [--only NAME ...]

Dev-time only: needs torch and transformers 5.x. For every fixture it builds the model with
transformers' own class from a config of unusual shape (fixed seed, float32, eager attention
and experts), perturbs every norm weight and bias as make_fixtures.py does (an engine that
ignores one fails), saves it with save_pretrained (transformers' own layout), reloads the
folder and records:

  * logits over the first PROMPT_LEN tokens of the corpus (one no-cache forward), long
    enough to pass every sliding window and short trained context in the configs;
  * a greedy continuation with the KV cache, as a user's generate() computes it (dynamic
    NTK rope changes its frequencies as the sequence grows, so the cached path is the one
    to match), and the smallest top-1 margin along it, which says how robust it is.

Deterministic: fixed seeds, sorted JSON. Shares the tokenizer and text with make_fixtures.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402  (torch, transformers, the tokenizer and the text)

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, GenerationConfig, Mxfp4Config  # noqa: E402

PROMPT_LEN = 48
GREEDY_NEW_TOKENS = 16


def specs(vocab: int, bos: int, eos: int) -> "OrderedDict[str, dict]":
    common = dict(vocab_size=vocab, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  initializer_range=base.INIT_RANGE, bos_token_id=bos, eos_token_id=eos, pad_token_id=None,
                  tie_word_embeddings=False)
    out = OrderedDict()
    # YaRN over a short trained context: the ramp falls inside head_dim, cos/sin scaled by mscale.
    # The middle layer is dense (mlp_only_layers), between two MoE layers.
    out["qwen3_moe_yarn"] = dict(seed=3101, config=transformers.Qwen3MoeConfig(
        **common, num_hidden_layers=3, head_dim=16, moe_intermediate_size=32, intermediate_size=64,
        mlp_only_layers=[1], num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, max_position_embeddings=64,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 16}))
    # Dynamic NTK: the prompt runs past max_position_embeddings (16), where the base grows.
    out["mixtral_dynamic"] = dict(seed=3102, config=transformers.MixtralConfig(
        **common, num_hidden_layers=2, head_dim=16, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
        max_position_embeddings=16, sliding_window=None,
        rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 4.0}))
    out["olmoe_linear"] = dict(seed=3103, config=transformers.OlmoeConfig(
        **common, num_hidden_layers=2, intermediate_size=32, num_experts=4, num_experts_per_tok=2,
        max_position_embeddings=64, rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.5}))
    # gpt-oss: sliding (window 8, passed by the prompt) and full layers mixed, sinks, biases,
    # YaRN as gpt-oss configures it (no truncation, trained context 4096: the ramp ends fall between
    # dimensions, so truncation would change them), a swiglu limit low enough to clamp.
    out["gpt_oss"] = dict(seed=3104, config=transformers.GptOssConfig(
        **dict(common, num_attention_heads=6, num_key_value_heads=2), head_dim=12, num_hidden_layers=3,
        intermediate_size=32, num_local_experts=8, num_experts_per_tok=3, sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"], max_position_embeddings=16384,
        swiglu_limit=1.5, rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 4.0,
                                           "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                                           "original_max_position_embeddings": 4096}))
    # GLM-4.5 MoE as published: a leading dense layer (wider than the experts); half the head
    # rotates, experts in 4 groups of which 2 compete, a correction bias, a shared expert, scaled weights.
    out["glm4_moe"] = dict(seed=3107, config=transformers.Glm4MoeConfig(
        **common, num_hidden_layers=3, head_dim=16, intermediate_size=96, moe_intermediate_size=32,
        n_routed_experts=8, num_experts_per_tok=3, n_shared_experts=1, n_group=4, topk_group=2,
        routed_scaling_factor=2.5, norm_topk_prob=True, first_k_dense_replace=1, attention_bias=True,
        use_qk_norm=True, max_position_embeddings=64, partial_rotary_factor=0.5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}))
    # DeepSeek-V2 (V2-Lite's shape in miniature): latent attention without a q bottleneck, its
    # rotary pairs interleaved, YaRN with mscale_all_dim (which scales the softmax too), a dense
    # first layer wider than the experts, softmax routing scaled by routed_scaling_factor, two
    # shared experts.
    mla = dict(common, num_key_value_heads=4)
    out["deepseek_v2"] = dict(seed=3108, config=transformers.DeepseekV2Config(
        **mla, num_hidden_layers=3, intermediate_size=96, moe_intermediate_size=32, n_routed_experts=8,
        num_experts_per_tok=3, n_shared_experts=2, first_k_dense_replace=1, kv_lora_rank=64, q_lora_rank=None,
        qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, routed_scaling_factor=1.5, topk_method="greedy",
        max_position_embeddings=256, rope_parameters={
            "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64,
            "mscale": 0.707, "mscale_all_dim": 0.707, "beta_fast": 32.0, "beta_slow": 1.0}))
    # DeepSeek-V2 as the 236B model routes: softmax probabilities limited to the 2 best of 4 groups,
    # a group scored by its best expert (group_limited_greedy); no dense layer, plain rope.
    out["deepseek_v2_groups"] = dict(seed=3110, config=transformers.DeepseekV2Config(
        **mla, num_hidden_layers=2, intermediate_size=96, moe_intermediate_size=32, n_routed_experts=8,
        num_experts_per_tok=3, n_shared_experts=1, first_k_dense_replace=0, kv_lora_rank=64, q_lora_rank=None,
        qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, routed_scaling_factor=1.5,
        topk_method="group_limited_greedy", n_group=4, topk_group=2, max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}))
    # DeepSeek-V3 / Moonlight / Kimi-K2 in miniature: q through a bottleneck, sigmoid routing with
    # a correction bias over 4 groups of which 2 compete, interleaved rotary pairs, a dense first layer.
    out["deepseek_v3"] = dict(seed=3109, config=transformers.DeepseekV3Config(
        **mla, num_hidden_layers=3, intermediate_size=96, moe_intermediate_size=32, n_routed_experts=8,
        num_experts_per_tok=3, n_shared_experts=1, first_k_dense_replace=1, n_group=4, topk_group=2,
        kv_lora_rank=64, q_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
        routed_scaling_factor=2.5, norm_topk_prob=True, rope_interleave=True, max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}))
    # Gemma 4's MoE (26B-A4B) in miniature: sliding layers of 2 KV heads of 16 beside global ones of
    # 1 KV head of 48 whose values come from the key projection, proportional rope on a quarter of the
    # global heads, the dense MLP beside the experts, soft-capped logits.
    out["gemma4"] = dict(seed=3110, config=transformers.Gemma4TextConfig(
        **common, num_hidden_layers=5, head_dim=16, global_head_dim=48, num_global_key_value_heads=1,
        attention_k_eq_v=True, sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        enable_moe_block=True, num_experts=8, top_k_experts=3, moe_intermediate_size=32, intermediate_size=48,
        hidden_size_per_layer_input=0, final_logit_softcapping=8.0, max_position_embeddings=1024,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                            "rope_theta": 1000000.0}}))
    # Issue 22's hybrids (docs/HYBRID_MODELS.md): Gated DeltaNet linear-attention layers beside gated
    # full-attention ones, 3 query heads on 1 KV head, 2 key heads under 6 value heads (r = 3), rope
    # on 4 of 16 dims, a shared expert with its gate; Qwen3-Next with a dense layer. Their prompt
    # runs past transformers' 64-token prefill chunk, so the chunked form is what is recorded.
    hybrid = dict(**{k: v for k, v in common.items() if k not in ("num_attention_heads", "num_key_value_heads")},
                  num_hidden_layers=4, num_attention_heads=3, num_key_value_heads=1, head_dim=16,
                  linear_conv_kernel_dim=4, linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2,
                  linear_num_value_heads=6, moe_intermediate_size=24, shared_expert_intermediate_size=40,
                  num_experts=5, num_experts_per_tok=2, max_position_embeddings=256,
                  layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"],
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25})
    out["qwen3_next"] = dict(seed=3111, prompt_len=80, config=transformers.Qwen3NextConfig(
        **hybrid, intermediate_size=48, decoder_sparse_step=1, mlp_only_layers=[2], norm_topk_prob=True))
    out["qwen3_5_moe"] = dict(seed=3112, prompt_len=80, config=transformers.Qwen3_5MoeTextConfig(
        **dict(hybrid, rope_parameters=dict(hybrid["rope_parameters"], mrope_section=[1, 1, 0],
                                            mrope_interleaved=True))))
    # Value heads wider than key heads (transformers allows it, llama.cpp does not): 12 against 8, and
    # four value heads to each key head.
    out["qwen3_next_wide_values"] = dict(seed=3113, prompt_len=80, config=transformers.Qwen3NextConfig(
        **dict(hybrid, linear_value_head_dim=12, linear_num_value_heads=8), intermediate_size=48,
        decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True))
    # The same shape as the hub ships gpt-oss: experts as MXFP4 blocks and scales (uint8), the
    # reference computed by transformers on exactly the values those blocks decode to.
    out["gpt_oss_mxfp4"] = dict(out["gpt_oss"], seed=3106, mxfp4=True)
    return out


def to_hub_mxfp4(w: torch.Tensor):
    """[E, rows, cols] weights (rows = outputs) as the hub's MXFP4 (blocks [E, rows, cols / 32, 16]
    with neighbouring elements paired in a byte, scales [E, rows, cols / 32]), and the values they
    decode to, checked against transformers' own decoder."""
    from edgemoe.format import mxfp4
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    E, rows, cols = w.shape
    ours = mxfp4.quantize_rows(w.reshape(E * rows, cols).numpy()).reshape(E, rows, cols // 32)
    c = mxfp4.codes(ours)  # [E, rows, n, 32] in element order
    blocks = (c[..., 0::2] | (c[..., 1::2] << 4)).astype(np.uint8)
    scales = ours["e"].copy()
    decoded = mxfp4.dequantize_blocks(ours)  # [E, rows, cols]
    theirs = convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales), dtype=torch.float32)
    assert np.array_equal(theirs.transpose(1, 2).numpy(), decoded), "hub MXFP4 layout misunderstood"
    return blocks, scales, torch.from_numpy(decoded)


def make_experts_mxfp4(model, folder):
    """Round the experts to MXFP4 in place, and rewrite the saved folder the way the hub stores them."""
    from safetensors.numpy import load_file, save_file

    packed = {}
    with torch.no_grad():
        for l, layer in enumerate(model.model.layers):
            ex, prefix = layer.mlp.experts, f"model.layers.{l}.mlp.experts"
            for name in ("gate_up_proj", "down_proj"):
                p = getattr(ex, name)  # [E, in, out]: the hub's rows are the outputs
                blocks, scales, decoded = to_hub_mxfp4(p.detach().transpose(1, 2).contiguous())
                p.copy_(decoded.transpose(1, 2))
                packed[f"{prefix}.{name}_blocks"], packed[f"{prefix}.{name}_scales"] = blocks, scales
    model.save_pretrained(folder)
    path = os.path.join(folder, "model.safetensors")
    tensors = {k: v for k, v in load_file(path).items() if not k.endswith(("experts.gate_up_proj", "experts.down_proj"))}
    save_file({**tensors, **packed}, path, metadata={"format": "pt"})
    config_path = os.path.join(folder, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    base.write_json(config_path, config)


def load(folder, spec):
    """The saved folder through transformers' own loader (MXFP4 experts decoded by transformers)."""
    if not spec.get("mxfp4"):
        return base.load_model(folder)
    m = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", experts_implementation="eager",
                                             dtype=torch.float32, quantization_config=Mxfp4Config(dequantize=True))
    m.eval()
    return m


def build(spec) -> torch.nn.Module:
    torch.manual_seed(spec["seed"])
    model = AutoModelForCausalLM.from_config(spec["config"], attn_implementation="eager",
                                             experts_implementation="eager", dtype=torch.float32)
    model.eval()
    g = torch.Generator().manual_seed(spec["seed"] + 7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias" in name:  # every bias, stacked expert biases included
                p.copy_(base.BIAS_STD * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:  # norm weights
                p.copy_(1.0 + base.NORM_JITTER * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # a buffer, zero at init: make it matter
                b.copy_(0.3 * torch.randn(b.shape, generator=g))
            elif name.endswith("layer_scalar"):  # Gemma 4's, saved with the weights: one at init
                b.copy_(1.0 + base.NORM_JITTER * torch.randn(b.shape, generator=g))
    return model


@torch.no_grad()
def greedy_with_cache(model, prompt, n_new):
    """Greedy continuation through the KV cache, and its smallest top-1 margin."""
    ids, margins, cache = list(prompt), [], None
    step = torch.tensor([ids])
    for _ in range(n_new):
        out = model(input_ids=step, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        top2 = torch.topk(out.logits[0, -1], 2).values
        margins.append(float(top2[0] - top2[1]))
        ids.append(int(out.logits[0, -1].argmax()))
        step = torch.tensor([[ids[-1]]])
    return ids[len(prompt):], margins


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args(argv)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    tok = base.build_tokenizer()
    vocab = tok.get_vocab_size()
    bos, eos = tok.token_to_id(base.BOS_TOKEN), tok.token_to_id(base.EOS_TOKEN)
    corpus_ids = tok.encode(base.CORPUS).ids
    greedy_prompt = tok.encode(base.GREEDY_TEXT).ids
    table = specs(vocab, bos, eos)
    for name in args.only or list(table):
        spec = table[name]
        prompt = corpus_ids[:spec.get("prompt_len", PROMPT_LEN)]
        assert len(prompt) == spec.get("prompt_len", PROMPT_LEN), f"{name}: the corpus is shorter than its prompt"
        folder = os.path.join(args.out, name)
        os.makedirs(folder, exist_ok=True)
        for fn in os.listdir(folder):  # only what this tool writes
            if fn.endswith((".safetensors", ".json", ".npz")):
                os.remove(os.path.join(folder, fn))
        model = build(spec)
        model.config.architectures = [type(model).__name__]
        if spec.get("mxfp4"):
            make_experts_mxfp4(model, folder)
        else:
            model.save_pretrained(folder)
        GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=bos).save_pretrained(folder)
        tok.save(os.path.join(folder, "tokenizer.json"), pretty=True)
        base.write_json(os.path.join(folder, "tokenizer_config.json"), base.tokenizer_config())

        loaded = load(folder, spec)
        with torch.no_grad():
            for p in loaded.parameters():  # out of the mmap: same kernels as the in-memory model
                p.data = p.data.clone()
            logits = loaded(input_ids=torch.tensor([prompt]), use_cache=False).logits[0].numpy()
            same = model(input_ids=torch.tensor([prompt]), use_cache=False).logits[0].numpy()
        assert np.array_equal(logits, same), f"{name}: the reloaded folder computes differently"
        greedy_ids, margins = greedy_with_cache(loaded, greedy_prompt, GREEDY_NEW_TOKENS)
        np.savez(os.path.join(folder, "reference.npz"), input_ids=np.asarray(prompt, np.int32),
                 logits=logits.astype(np.float32), greedy_prompt=np.asarray(greedy_prompt, np.int32),
                 greedy_ids=np.asarray(greedy_ids, np.int32))
        top2 = np.sort(logits, -1)[:, -2:]
        info = {
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
            "class": type(model).__name__,
            "prompt_tokens": len(prompt),
            "logits_std": float(f"{logits.std():.4g}"),
            "top1_margin_min": float(f"{(top2[:, 1] - top2[:, 0]).min():.4g}"),
            "greedy_margin_min": float(f"{min(margins):.4g}"),
            "greedy_text": tok.decode(greedy_ids),
            "note": "logits: one no-cache forward (eager, float32); greedy: argmax through the KV cache",
        }
        base.write_json(os.path.join(folder, "reference.json"), info)
        print(f"{name:18s} logits std {info['logits_std']:.3f}  top-1 margin min {info['top1_margin_min']:.4f}  "
              f"greedy margin min {info['greedy_margin_min']:.4f}  {info['greedy_text']!r}")


if __name__ == "__main__":
    sys.exit(main())
