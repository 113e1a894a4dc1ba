"""Hybrid linear-attention models (Qwen3.5/3.6-MoE, Qwen3-Next): what their context costs, and
what share of a linear layer's prefill the recurrence itself takes.

    python bench/hybrid_state.py [--model MODEL.emoe] [--write bench/RESULTS.md]

1. Context memory per sequence, from the memory plan's own formula (the engine allocates what it
   says; tests compare the two): Qwen3.6-35B-A3B's 40 layers (30 Gated DeltaNet, 10 gated full
   attention) with the default two state checkpoints, against the same model with every layer
   full attention (its KV heads and width), fp16 KV cache, at several contexts.
2. The gated delta rule kernel over one layer's 32 value heads of 128 x 128 for a 512-token batch,
   against the time a whole 512-token prefill of --model spends per linear layer (a Qwen3.6-shaped
   synthetic: bench/make_synthetic.py --arch qwen3_5_moe), everything in RAM: the share a chunked
   (WY) form of the recurrence could at most take off a CPU prefill.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_util import report  # noqa: E402
from edgemoe import _core  # noqa: E402
from edgemoe.convert.hf import pick_arch  # noqa: E402
from edgemoe.format.model_config import validate_config  # noqa: E402

QWEN36 = {"architectures": ["Qwen3_5MoeForCausalLM"], "hidden_size": 2048, "num_hidden_layers": 40,
          "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256, "linear_conv_kernel_dim": 4,
          "linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_key_head_dim": 128,
          "linear_value_head_dim": 128, "num_experts": 256, "num_experts_per_tok": 8, "moe_intermediate_size": 512,
          "shared_expert_intermediate_size": 512, "vocab_size": 248320, "max_position_embeddings": 262144,
          "rope_parameters": {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25}}
CONTEXTS = (4096, 32768, 262144)
MiB = 1 << 20


def context_table() -> list:
    hybrid = validate_config(pick_arch(QWEN36).config(QWEN36))
    dense = dict(hybrid, linear_layers=[], linear_conv_kernel=0, linear_key_heads=0, linear_value_heads=0,
                 linear_key_head_dim=0, linear_value_head_dim=0)
    lines = ["| context | hybrid: KV (10 layers) + state (30 layers, live + 2 checkpoints) | of which state | "
             "all 40 layers full attention | ratio |", "|---|---|---|---|---|"]
    for ctx in CONTEXTS:
        options = {"ctx_size": ctx, "max_batch": 256, "kv_cache": "f16", "state_checkpoints": 2}
        ours = _core.kv_cache_bytes(hybrid, options)
        # one copy of the state is what a checkpoint more costs: the plan's formula, not a copy of it
        live = ours - _core.kv_cache_bytes(hybrid, dict(options, state_checkpoints=1))
        state = 3 * live
        full = _core.kv_cache_bytes(dense, options)
        lines.append(f"| {ctx} | {ours / MiB:.0f} MiB | {state / MiB:.0f} MiB | {full / MiB:.0f} MiB | "
                     f"{ours / full:.3f} |")
    lines.append(f"\nThe 30 linear layers' live state: {live / MiB:.0f} MiB (per layer 32 heads x 128 x 128 f32 "
                 f"matrices and the convolution's last 3 inputs of 8192 channels), whatever the context; each "
                 f"checkpoint as much again.")
    return lines


def kernel_share(model_path: str, threads: int, tokens: int = 512) -> list:
    import edgemoe

    rng = np.random.default_rng(0)
    n, dk, dv, heads = tokens, 128, 128, 32
    unit = lambda x: x / np.sqrt((x * x).sum(-1, keepdims=True))  # noqa: E731
    args = (np.zeros((dk, dv), np.float32), (unit(rng.standard_normal((n, dk))) / np.sqrt(dk)).astype(np.float32),
            unit(rng.standard_normal((n, dk))).astype(np.float32), rng.standard_normal((n, dv)).astype(np.float32),
            rng.uniform(0.5, 1, n).astype(np.float32), rng.uniform(0, 1, n).astype(np.float32))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(heads):
            _core.gated_delta_rule(*args)
        best = min(best, time.perf_counter() - t0)
    model = edgemoe.load(model_path, threads=threads, ctx_size=tokens + 16)
    ids = rng.integers(0, 384, tokens).tolist()
    model.logits(ids[:64])  # warm: every expert read once
    prefill = float("inf")
    for _ in range(2):
        model.reset()
        t0 = time.perf_counter()
        model.eval(ids)
        prefill = min(prefill, time.perf_counter() - t0)
    cfg = model.config
    per_layer = prefill / cfg["n_layers"]
    # the kernel runs one head per thread: the layer's share with `threads` threads
    kernel = best / min(threads, heads)
    return [f"\n{tokens}-token prefill of `{os.path.basename(model_path)}` ({cfg['n_layers']} layers, "
            f"{len(cfg['linear_layers'])} linear), {threads} threads, in RAM: {prefill:.2f} s, "
            f"{per_layer * 1e3:.0f} ms per layer. The recurrence of one linear layer (32 heads of 128 x 128, "
            f"{tokens} tokens): {best * 1e3:.1f} ms on one thread, {kernel * 1e3:.1f} ms over {threads} "
            f"({_core.current_isa()}): {kernel / per_layer:.1%} of a layer's prefill, the most a chunked form "
            f"of it could save."]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a Qwen3.6-shaped container for the prefill share")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write", default=None)
    a = p.parse_args()
    lines = [f"\n### Hybrid models: context memory and the recurrence's share of prefill ({datetime.date.today()})\n",
             f"Command: `{' '.join(['python bench/hybrid_state.py'] + sys.argv[1:])}` on {platform.machine()}, "
             f"{os.cpu_count()} cores. Context bytes from the memory plan's formula (fp16 KV cache; the state is "
             "f32 as transformers keeps it).\n"]
    lines += context_table()
    if a.model:
        lines += kernel_share(a.model, a.threads)
    report("\n".join(lines) + "\n", a.write)


if __name__ == "__main__":
    main()
