#!/usr/bin/env python3
"""Build the tiny random-weight vision-language MoE fixtures under tests/fixtures/ (issue 23,
docs/VISION_MODELS.md): `qwen3_vl_moe` (Qwen3VLMoeForConditionalGeneration, with DeepStack) and
`qwen3_5_moe_vl` (Qwen3_5MoeForConditionalGeneration, hybrid text model, no DeepStack).

    python tools/make_vision_fixtures.py --out tests/fixtures [--only NAME ...]

Dev-time only: needs torch, transformers 5.x and Pillow (torchvision is not needed: the image
processor is transformers' own PIL-backend `Qwen2VLImageProcessorPil`, built from the
preprocessor_config.json written into the folder). For every fixture it builds the model with
transformers' own class (fixed seed, float32, eager attention and experts), perturbs every bias
(0.1 N) and every 1-D weight (1 + 0.2 N, the vision LayerNorms included) as make_fixtures.py does,
scales the learned vision position table so it matters, saves it with save_pretrained (transformers'
own layout), reloads the folder, checks the reloaded model computes bit-identically, and records in
`reference.npz` (np.savez_compressed):

  * image{i}          [H, W, 3] uint8   three smooth random RGB images of different shapes;
  * pixel_values{i}   [N, 1536] float32 and grid{i} [3] int64, from the image processor;
  * vision{i}         [N/4, out_hidden] the merged features in LM token order (pooler_output);
  * deepstack{i}      [n_deepstack, N/4, out_hidden] (qwen3_vl_moe only);
  * vision_blocks{i}  [depth + 1, N, D] hidden states in merge-window order ([0] = patch embed +
                      position embedding, [k] = output of block k - 1), for debugging;
  * prompt1_*         one image (image 0) inside text: ids, logits of one no-cache forward at every
                      position, 12 greedy tokens through model.generate (KV cache, rope deltas), and
                      prompt1_positions [3, S], the M-RoPE position ids of get_rope_index;
  * prompt2_*         two images (1 and 2) with text between and after them: ids, logits, greedy;
  * text_*            a text-only prompt through the same ConditionalGeneration model.

Deterministic: fixed seeds, sorted JSON, no timestamps (numpy 2.4 dates the npz members 1980-01-01);
two runs give byte-identical folders. Seeds were picked so that every top-1 margin is > 0.01 and no
greedy token is a vision token. Shares the tokenizer and text with make_fixtures.py, with the four
vision special tokens added after its vocabulary (ids 384..387).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402  (torch, transformers, the tokenizer and the text)

import PIL  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import (  # noqa: E402
    AutoImageProcessor,
    AutoTokenizer,
    GenerationConfig,
    Qwen3_5MoeConfig,
    Qwen3_5MoeForConditionalGeneration,
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil  # noqa: E402

VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

# The hub's form (Qwen3-VL / Qwen3.5 ship the same file) with small pixel limits: 64x64 to 256x256.
PREPROCESSOR_CONFIG = {
    "size": {"shortest_edge": 4096, "longest_edge": 65536},
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen3VLProcessor",
}

# Qwen3-VL's template, without tools and reasoning: content is a string or a list of parts; an image
# part ({"type": "image"}, or with an "image" / "image_url" key) renders as the vision placeholder,
# a video part as the video one, a text part as its text; `add_vision_id` numbers them.
CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) -%}"
    "{%- set video_count = namespace(value=0) -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for content in message['content'] -%}"
    "{%- if content['type'] == 'image' or 'image' in content or 'image_url' in content -%}"
    "{%- set image_count.value = image_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Picture ' ~ image_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif content['type'] == 'video' or 'video' in content -%}"
    "{%- set video_count.value = video_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Video ' ~ video_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in content -%}"
    "{{- content['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
CHAT_CASES = [
    ([{"role": "user", "content": "Hello!"}], True, {},
     "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"),
    ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}], True, {},
     "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n"
     "<|im_start|>assistant\n"),
    ([{"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Compare "}, {"image": "a.png"},
                                   {"type": "text", "text": " and "}, {"image_url": {"url": "b.png"}}, {"type": "video"}]},
      {"role": "assistant", "content": [{"type": "text", "text": "Same."}]}], False, {"add_vision_id": True},
     "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCompare Picture 1: "
     "<|vision_start|><|image_pad|><|vision_end|> and Picture 2: <|vision_start|><|image_pad|><|vision_end|>"
     "Video 1: <|vision_start|><|video_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\nSame.<|im_end|>\n"),
]

# (height, width) of the three images and the seed of each. Image 1 rounds to 32 x 96, below
# min_pixels, so smart_resize's upscaling branch runs (64 x 128).
IMAGE_SHAPES = [(75, 100), (40, 110), (150, 90)]
IMAGE_SEED = 2301
POS_EMBED_SCALE = 10.0  # learned position table: init std 0.2 -> 2, the size of the patch embedding
GREEDY_NEW_TOKENS = 12
# Prompt text: spans of the shared corpus's token ids.
PROMPT1_TEXT = [(0, 5), (5, 17)]  # text, image 0, text
PROMPT2_TEXT = [(40, 43), (43, 47), (47, 57)]  # text, image 1, text, image 2, text
TEXT_PROMPT = (80, 104)


def specs(vocab: int, bos: int, eos: int, tid: dict) -> "OrderedDict[str, dict]":
    vision = dict(depth=3, hidden_size=32, intermediate_size=48, num_heads=2, in_channels=3, patch_size=16,
                  temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=64, num_position_embeddings=64,
                  hidden_act="gelu_pytorch_tanh", initializer_range=base.INIT_RANGE)
    ids = dict(image_token_id=tid["<|image_pad|>"], video_token_id=tid["<|video_pad|>"],
               vision_start_token_id=tid["<|vision_start|>"], vision_end_token_id=tid["<|vision_end|>"],
               tie_word_embeddings=False)
    text = dict(vocab_size=vocab, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                initializer_range=base.INIT_RANGE, bos_token_id=bos, eos_token_id=eos, pad_token_id=None,
                tie_word_embeddings=False, max_position_embeddings=4096, moe_intermediate_size=24,
                num_experts_per_tok=2)
    out = OrderedDict()
    # DeepStack from vision blocks 0 and 2 (not simply 0..n-1) into LM layers 0 and 1; the rope in the
    # hub's legacy form (rope_theta + rope_scaling), 8 rotary pairs interleaved T H W T H W T T.
    out["qwen3_vl_moe"] = dict(seed=2324, cls=Qwen3VLMoeForConditionalGeneration, config=Qwen3VLMoeConfig(
        vision_config=dict(vision, deepstack_visual_indexes=[0, 2]),
        text_config=dict(text, num_hidden_layers=3, head_dim=16, intermediate_size=128, num_experts=4,
                         norm_topk_prob=True, rope_theta=5e6,
                         rope_scaling={"rope_type": "default", "mrope_section": [4, 2, 2], "mrope_interleaved": True}),
        **ids))
    # The hybrid text model of make_family_fixtures.py's `qwen3_5_moe`, with head_dim 32: 8 of its dims
    # rotate, 4 pairs interleaved T H W T.
    out["qwen3_5_moe_vl"] = dict(seed=2320, cls=Qwen3_5MoeForConditionalGeneration, config=Qwen3_5MoeConfig(
        vision_config=vision,
        text_config=dict(text, num_hidden_layers=4, num_attention_heads=3, num_key_value_heads=1, head_dim=32,
                         linear_conv_kernel_dim=4, linear_key_head_dim=8, linear_value_head_dim=8,
                         linear_num_key_heads=2, linear_num_value_heads=6, shared_expert_intermediate_size=40,
                         num_experts=5,
                         layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"],
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                                          "mrope_section": [2, 1, 1], "mrope_interleaved": True}),
        **ids))
    return out


# --------------------------------------------------------------------------
# Tokenizer, images, processor
# --------------------------------------------------------------------------


def build_tokenizer():
    tok = base.build_tokenizer()
    n0 = tok.get_vocab_size()
    assert tok.add_special_tokens(VISION_TOKENS) == len(VISION_TOKENS)
    for i, s in enumerate(VISION_TOKENS):
        assert tok.token_to_id(s) == n0 + i, (s, tok.token_to_id(s))
    assert tok.get_vocab_size() == n0 + len(VISION_TOKENS)
    return tok


def tokenizer_config(tok) -> dict:
    cfg = base.tokenizer_config()
    for s in VISION_TOKENS:
        cfg["added_tokens_decoder"][str(tok.token_to_id(s))] = {
            "content": s, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    cfg["additional_special_tokens"] = cfg["additional_special_tokens"] + VISION_TOKENS
    cfg["chat_template"] = CHAT_TEMPLATE
    return cfg


def make_images() -> list:
    """Smooth random RGB images: low-resolution noise upsampled bicubically (deterministic)."""
    rng = np.random.default_rng(IMAGE_SEED)
    images = []
    for h, w in IMAGE_SHAPES:
        low = rng.integers(0, 256, (max(2, h // 10), max(2, w // 10), 3), dtype=np.uint8)
        images.append(np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.uint8))
    return images


def image_processor():
    kwargs = {k: v for k, v in PREPROCESSOR_CONFIG.items() if k not in ("image_processor_type", "processor_class")}
    return Qwen2VLImageProcessorPil(**kwargs)


def preprocess(proc, images):
    enc = proc(images=[Image.fromarray(im) for im in images], return_tensors="pt")
    return enc["pixel_values"], enc["image_grid_thw"]


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------


def build(spec) -> torch.nn.Module:
    torch.manual_seed(spec["seed"])
    model = spec["cls"]._from_config(spec["config"], attn_implementation="eager", experts_implementation="eager",
                                     dtype=torch.float32)
    model.eval()
    g = torch.Generator().manual_seed(spec["seed"] + 7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias" in name:  # every bias (vision qkv/proj/fc/LayerNorm/patch embed included)
                p.copy_(base.BIAS_STD * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:  # norm weights (LayerNorm and RMSNorm)
                p.copy_(1.0 + base.NORM_JITTER * torch.randn(p.shape, generator=g))
        model.model.visual.pos_embed.weight.mul_(POS_EMBED_SCALE)
    return model


def load(folder, spec):
    m = spec["cls"].from_pretrained(folder, attn_implementation="eager", experts_implementation="eager",
                                    dtype=torch.float32)
    m.eval()
    with torch.no_grad():
        for p in m.parameters():  # out of the mmap: same kernels as the in-memory model
            p.data = p.data.clone()
    return m


def mm_types(ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    return (ids == image_token_id).to(torch.int32)


@torch.no_grad()
def forward_logits(model, ids, pv=None, grid=None, **kw):
    model.model.rope_deltas = None
    ids = torch.tensor([ids])
    extra = {}
    if pv is not None:
        extra = dict(pixel_values=pv, image_grid_thw=grid, mm_token_type_ids=mm_types(ids, model.config.image_token_id))
    return model(input_ids=ids, use_cache=False, **extra, **kw).logits[0].numpy()


@torch.no_grad()
def vision_outputs(model, pv, grid):
    out = model.model.visual(pv, grid_thw=grid, output_hidden_states=True)
    res = {"vision": out.pooler_output.numpy(), "vision_blocks": torch.stack(out.hidden_states).numpy()}
    ds = getattr(out, "deepstack_features", None)
    if ds is not None:
        res["deepstack"] = torch.stack(ds).numpy()
    return res


@torch.no_grad()
def greedy(model, prompt, pv, grid, n_new):
    """model.generate (KV cache, rope deltas), eos disabled, checked against a no-cache argmax loop
    (the full prompt and images every step); the loop's top-1 margins."""
    image_id = model.config.image_token_id
    ids = torch.tensor([prompt])
    extra = {}
    if pv is not None:
        extra = dict(pixel_values=pv, image_grid_thw=grid, mm_token_type_ids=mm_types(ids, image_id))
    gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=n_new, min_new_tokens=0, use_cache=True,
                               eos_token_id=None, bos_token_id=None, pad_token_id=0, num_beams=1,
                               temperature=None, top_p=None, top_k=None)
    saved_gc = model.generation_config
    model.generation_config = GenerationConfig(pad_token_id=0)  # generate() merges eos from it otherwise
    model.model.rope_deltas = None
    try:
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen_cfg, **extra)
    finally:
        model.generation_config = saved_gc
    new = out[0, len(prompt):].tolist()
    # a generated vision token would be a placeholder without features (and break the loop): reseed
    vision_ids = {model.config.vision_start_token_id, model.config.vision_end_token_id, image_id,
                  model.config.video_token_id}
    assert not set(new) & vision_ids, f"greedy produced a vision token: {new}"
    seq, margins = list(prompt), []
    for _ in range(n_new):
        lg = forward_logits(model, seq, pv, grid)[-1]
        top2 = np.sort(lg)[-2:]
        margins.append(float(top2[1] - top2[0]))
        seq.append(int(lg.argmax()))
    naive = seq[len(prompt):]
    assert new == naive, f"generate() {new} != no-cache greedy {naive}"
    return new, margins


def top1_margin_min(logits) -> float:
    top2 = np.sort(logits, -1)[:, -2:]
    return float((top2[:, 1] - top2[:, 0]).min())


@torch.no_grad()
def sensitivity(model, ids, pv, grid, ref):
    """How far prompt-2 logits move under plausible engine mistakes (max |dlogit|, argmax agreement)."""
    model.model.rope_deltas = None
    t = torch.tensor([ids])
    mm = mm_types(t, model.config.image_token_id)
    pos, _ = model.model.get_rope_index(t, mm, image_grid_thw=grid)
    S = t.shape[1]

    def cmp(lg):
        return {"max_abs_dlogit": float(f"{np.abs(lg - ref).max():.3g}"),
                "argmax_agreement": float(f"{(lg.argmax(-1) == ref.argmax(-1)).mean():.4g}")}

    out = {}
    plain = torch.arange(S).view(1, 1, S).expand(3, 1, S)
    out["positions_1d"] = cmp(forward_logits(model, ids, pv, grid, position_ids=plain))
    out["positions_h_w_swapped"] = cmp(forward_logits(model, ids, pv, grid, position_ids=pos[[0, 2, 1]]))
    visual = model.model.visual
    w = visual.pos_embed.weight.data.clone()
    visual.pos_embed.weight.data.zero_()
    out["vision_pos_embed_dropped"] = cmp(forward_logits(model, ids, pv, grid))
    visual.pos_embed.weight.data.copy_(w)
    if hasattr(visual, "deepstack_visual_indexes"):
        saved = list(visual.deepstack_visual_indexes)
        visual.deepstack_visual_indexes = []
        out["deepstack_dropped"] = cmp(forward_logits(model, ids, pv, grid))
        visual.deepstack_visual_indexes = list(range(len(saved)))  # blocks 0..n-1 instead of the listed ones
        out["deepstack_from_blocks_0_to_n"] = cmp(forward_logits(model, ids, pv, grid))
        visual.deepstack_visual_indexes = saved
    assert np.array_equal(forward_logits(model, ids, pv, grid), ref), "model not restored"
    return out


def safetensors_listing(folder):
    out = {}
    for fn in sorted(os.listdir(folder)):
        if fn.endswith(".safetensors"):
            with safe_open(os.path.join(folder, fn), "pt") as f:
                for k in f.keys():
                    sl = f.get_slice(k)
                    out[k] = [list(sl.get_shape()), sl.get_dtype()]
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args(argv)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    tok = build_tokenizer()
    vocab = tok.get_vocab_size()
    bos, eos = tok.token_to_id(base.BOS_TOKEN), tok.token_to_id(base.EOS_TOKEN)
    tid = {s: tok.token_to_id(s) for s in VISION_TOKENS}
    VS, VE, IMG = tid["<|vision_start|>"], tid["<|vision_end|>"], tid["<|image_pad|>"]
    corpus = tok.encode(base.CORPUS).ids

    images = make_images()
    proc = image_processor()
    processed = [preprocess(proc, [im]) for im in images]
    both_pv, both_grid = preprocess(proc, images[1:])  # one call with two images = the two concatenated
    assert torch.equal(both_pv, torch.cat([processed[1][0], processed[2][0]]))
    assert torch.equal(both_grid, torch.cat([processed[1][1], processed[2][1]]))
    n_tok = [int(g.prod()) // 4 for _, g in processed]

    def span(a, b):
        return corpus[a:b]

    p1 = span(*PROMPT1_TEXT[0]) + [VS] + [IMG] * n_tok[0] + [VE] + span(*PROMPT1_TEXT[1])
    p2 = (span(*PROMPT2_TEXT[0]) + [VS] + [IMG] * n_tok[1] + [VE] + span(*PROMPT2_TEXT[1]) + [VS] + [IMG] * n_tok[2]
          + [VE] + span(*PROMPT2_TEXT[2]))
    text_ids = span(*TEXT_PROMPT)
    pv1, grid1 = processed[0]

    table = specs(vocab, bos, eos, tid)
    for name in args.only or list(table):
        spec = table[name]
        folder = os.path.join(args.out, name)
        os.makedirs(folder, exist_ok=True)
        for fn in os.listdir(folder):  # only what this tool writes
            if fn.endswith((".safetensors", ".json", ".npz")):
                os.remove(os.path.join(folder, fn))
        model = build(spec)
        model.config.architectures = [type(model).__name__]
        model.save_pretrained(folder)
        GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=bos).save_pretrained(folder)
        tok.save(os.path.join(folder, "tokenizer.json"), pretty=True)
        base.write_json(os.path.join(folder, "tokenizer_config.json"), tokenizer_config(tok))
        base.write_json(os.path.join(folder, "preprocessor_config.json"), PREPROCESSOR_CONFIG)

        # the folder through transformers' own loaders
        hf_tok = AutoTokenizer.from_pretrained(folder)
        assert len(hf_tok) == vocab
        assert hf_tok.encode("".join(VISION_TOKENS), add_special_tokens=False) == [tid[s] for s in VISION_TOKENS]
        assert hf_tok.encode(base.CORPUS, add_special_tokens=False) == corpus
        for messages, gen_prompt, kw, expected in CHAT_CASES:
            text = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen_prompt, **kw)
            assert text == expected, repr(text)
        auto_proc = AutoImageProcessor.from_pretrained(folder)
        assert type(auto_proc) is Qwen2VLImageProcessorPil, type(auto_proc)
        for im, (pv, grid) in zip(images, processed):
            pv_a, grid_a = preprocess(auto_proc, [im])
            assert torch.equal(pv_a, pv) and torch.equal(grid_a, grid)
            enc_np = proc(images=[im], return_tensors="pt")  # a HWC uint8 array gives the same
            assert torch.equal(enc_np["pixel_values"], pv)

        loaded = load(folder, spec)
        npz = {}
        for i, (im, (pv, grid)) in enumerate(zip(images, processed)):
            vis = vision_outputs(loaded, pv, grid)
            mem = vision_outputs(model, pv, grid)
            for k in vis:
                assert np.array_equal(vis[k], mem[k]), f"{name}: the reloaded folder computes {k}{i} differently"
            assert len(vis["vision_blocks"]) == spec["config"].vision_config.depth + 1
            npz[f"image{i}"] = im
            npz[f"pixel_values{i}"] = pv.numpy().astype(np.float32)
            npz[f"grid{i}"] = grid[0].numpy().astype(np.int64)
            for k, v in vis.items():
                npz[f"{k}{i}"] = v.astype(np.float32)

        info_prompts = {}
        for key, ids, pv, grid in (("prompt1", p1, pv1, grid1), ("prompt2", p2, both_pv, both_grid),
                                   ("text", text_ids, None, None)):
            logits = forward_logits(loaded, ids, pv, grid)
            assert np.array_equal(logits, forward_logits(model, ids, pv, grid)), \
                f"{name}: the reloaded folder computes {key} differently"
            npz[f"{key}_ids"] = np.asarray(ids, np.int32)
            npz[f"{key}_logits"] = logits.astype(np.float32)
            info_prompts[key] = {"tokens": len(ids), "top1_margin_min": float(f"{top1_margin_min(logits):.4g}"),
                                 "logits_std": float(f"{logits.std():.4g}")}
            if key != "text":
                new, margins = greedy(loaded, ids, pv, grid, GREEDY_NEW_TOKENS)
                npz[f"{key}_greedy"] = np.asarray(new, np.int32)
                info_prompts[key]["greedy_margin_min"] = float(f"{min(margins):.4g}")
                info_prompts[key]["greedy_text"] = tok.decode(new)
                info_prompts[key]["image_tokens"] = int((np.asarray(ids) == IMG).sum())
        loaded.model.rope_deltas = None
        t1 = torch.tensor([p1])
        pos, delta = loaded.model.get_rope_index(t1, mm_types(t1, IMG), image_grid_thw=grid1)
        npz["prompt1_positions"] = pos[:, 0].numpy().astype(np.int64)
        _, delta2 = loaded.model.get_rope_index(torch.tensor([p2]), mm_types(torch.tensor([p2]), IMG),
                                                image_grid_thw=both_grid)
        info_prompts["prompt1"]["rope_delta"] = int(delta)
        info_prompts["prompt2"]["rope_delta"] = int(delta2)

        np.savez_compressed(os.path.join(folder, "reference.npz"), **npz)
        sens = sensitivity(model, p2, both_pv, both_grid, npz["prompt2_logits"])

        cfg = loaded.config
        info = {
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                         "tokenizers": tokenizers.__version__, "safetensors": safetensors.__version__,
                         "numpy": np.__version__, "pillow": PIL.__version__, "python": platform.python_version()},
            "class": type(model).__name__,
            "seed": spec["seed"],
            "token_ids": {s: tid[s] for s in VISION_TOKENS},
            "vocab_size": vocab,
            "images": [{"shape": list(im.shape), "resized_hw": [int(g[0, 1]) * 16, int(g[0, 2]) * 16],
                        "grid_thw": g[0].tolist(), "tokens": n}
                       for im, (_, g), n in zip(images, processed, n_tok)],
            "image_processor": "transformers Qwen2VLImageProcessorPil (PIL bicubic resize) from preprocessor_config.json",
            "prompts": info_prompts,
            "deepstack_visual_indexes": list(getattr(cfg.vision_config, "deepstack_visual_indexes", []) or [])
            if hasattr(loaded.model.visual, "deepstack_merger_list") else [],
            "pos_embed_scale": POS_EMBED_SCALE,
            "sensitivity_prompt2": sens,
            "chat_cases": [{"messages": m, "add_generation_prompt": g, "kwargs": kw, "text": t}
                           for m, g, kw, t in CHAT_CASES],
            "tensors": safetensors_listing(folder),
            "npz_keys": {k: [list(v.shape), str(v.dtype)] for k, v in npz.items()},
            "note": ("transformers, eager attention and experts, float32, reloaded from this folder. "
                     "vision{i}: model.model.visual(pixel_values{i}, grid_thw).pooler_output (LM token order); "
                     "deepstack{i}: its deepstack_features; vision_blocks{i}: hidden_states (merge-window order). "
                     "*_logits: one no-cache forward with pixel_values, image_grid_thw and mm_token_type_ids = "
                     "(ids == image_token_id); *_greedy: model.generate, KV cache, eos disabled, equal to a "
                     "no-cache argmax loop; prompt1_positions: model.model.get_rope_index (T, H, W rows). "
                     "sensitivity_prompt2: prompt-2 logits of the in-memory model under deliberate mistakes."),
        }
        base.write_json(os.path.join(folder, "reference.json"), info)
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        print(f"{name}: {size / 1024:.0f} KB (npz {os.path.getsize(os.path.join(folder, 'reference.npz')) / 1024:.0f} KB)")
        for key, st in info_prompts.items():
            print(f"  {key:8s} {st}")
        for key, st in sens.items():
            print(f"  sensitivity {key}: {st}")


if __name__ == "__main__":
    sys.exit(main())
