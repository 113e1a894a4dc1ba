"""Gemma 4's transformers config from llama.cpp's gemma4 GGUF metadata (edgemoe/convert/gguf.py
serves its tensors under transformers' names).

llama.cpp writes the global (full-attention) layers' widths as key_length / head_count_kv[layer]
and the sliding layers' as key_length_swa; rope.freq_base is the global layers' base and
rope.freq_base_swa the sliding ones'; the global layers' proportional rope turns the whole head
with frequency factors (rope_freqs) of 1 for the pairs that turn and a huge number for those
that do not.

Its vocabulary (tokenizer.ggml.model = "gemma4", what llama.cpp's converter writes) is a BPE over
raw UTF-8 with spaces escaped as U+2581: llama.cpp (src/llama-vocab.cpp) escapes the spaces,
splits the text into runs of non-newlines and runs of newlines, looks a newline run up whole, merges
the rest by rank, and spells what is left outside the vocabulary as <0xXX> byte tokens; a BOS
always starts the text. gemma4_tokenizer rebuilds that as a `tokenizers` BPE.
"""
from typing import Any, Dict, List, Tuple

import numpy as np

from ..errors import FormatError, UnsupportedModelError
from .spm_tokenizer import NORMAL, SPACE, byte_fallback_vocabulary

NEWLINE_RUNS = "[^\\n]+|[\\n]+"  # llama.cpp's gemma4 pre-tokenizer split

NO_TURN = 1e20  # a frequency factor at least this large leaves its pair unturned (llama.cpp writes 1e30)


def gemma4_config(ck, cfg: Dict[str, Any]) -> Dict[str, Any]:
    a, n = ck.arch_name, ck.n_layers
    sliding = [bool(s) for s in ck.field(f"{a}.attention.sliding_window_pattern")]
    kv_heads = ck.kv_heads_per_layer or [ck.n_kv_heads] * n
    if len(sliding) != n or len(kv_heads) != n:
        raise FormatError(f"{ck.path}: sliding_window_pattern and head_count_kv must name {n} layers")
    if sliding[-1]:
        raise FormatError(f"{ck.path}: the last layer of a gemma4 model is a full-attention layer")
    global_layers = [l for l in range(n) if not sliding[l]]
    global_kv = {kv_heads[l] for l in global_layers}
    if len({kv_heads[l] for l in range(n) if sliding[l]} or {0}) != 1 or len(global_kv) != 1:
        raise UnsupportedModelError(f"{ck.path}: layers of one kind with different key/value head counts")
    head_dim = int(ck.field(f"{a}.attention.key_length_swa"))
    global_head_dim = int(ck.field(f"{a}.attention.key_length"))
    if head_dim < 2 or global_head_dim < 2:
        raise FormatError(f"{ck.path}: attention.key_length {global_head_dim} / key_length_swa {head_dim}")
    ff = ck.field(f"{a}.feed_forward_length")
    if isinstance(ff, list) and len(set(ff)) != 1:
        raise UnsupportedModelError(f"{ck.path}: MLPs of different widths (use_double_wide_mlp)")
    first_global = f"blk.{global_layers[0]}."
    return {
        "architectures": ["Gemma4ForCausalLM"], "model_type": "gemma4_text", "enable_moe_block": True,
        "hidden_activation": "gelu_pytorch_tanh",
        "num_key_value_heads": kv_heads[sliding.index(True)] if any(sliding) else kv_heads[0],
        "head_dim": head_dim,
        "layer_types": ["sliding_attention" if s else "full_attention" for s in sliding],
        "sliding_window": int(ck.field(f"{a}.attention.sliding_window")),
        "per_layer_config": {str(l): {"head_dim": global_head_dim, "num_key_value_heads": kv_heads[l]}
                             for l in global_layers},
        "attention_k_eq_v": f"{first_global}attn_v.weight" not in ck.tensors,
        "attention_bias": "blk.0.attn_q.bias" in ck.tensors,
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default",
                                  "rope_theta": float(ck.field(f"{a}.rope.freq_base_swa", 10000.0))},
            "full_attention": {"rope_type": "proportional", "rope_theta": cfg["rope_theta"],
                               "partial_rotary_factor": _turning_share(ck, global_head_dim)}},
        "intermediate_size": int(ff[0] if isinstance(ff, list) else ff),
        "moe_intermediate_size": int(ck.field(f"{a}.expert_feed_forward_length")),
        "top_k_experts": cfg["num_experts_per_tok"],
        "final_logit_softcapping": float(ck.field(f"{a}.final_logit_softcapping", 0.0)) or None,
        "hidden_size_per_layer_input": int(ck.field(f"{a}.embedding_length_per_layer_input", 0)),
        "num_kv_shared_layers": int(ck.field(f"{a}.attention.shared_kv_layers", 0)),
    }


def _turning_share(ck, global_head_dim: int) -> float:
    """The share of the global head that turns, from rope_freqs: factors of 1 for the first pairs,
    NO_TURN or more for the rest (the only pattern transformers' proportional rope makes)."""
    if "rope_freqs.weight" not in ck.tensors:
        return 1.0
    t = ck.tensors["rope_freqs.weight"]
    factors = ck._decode(t, t.data).reshape(-1)
    turning = int(np.sum(factors == 1.0))
    if len(factors) != global_head_dim // 2 or not np.all(factors[:turning] == 1.0) or \
            not np.all(factors[turning:] >= NO_TURN):
        raise UnsupportedModelError(f"{ck.path}: rope_freqs other than proportional rope's (1 for the pairs that "
                                    f"turn, then no turn) are not supported")
    return 2 * turning / global_head_dim


def gemma4_tokenizer(ck) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(tokenizer.json, tokenizer_config) for the GGUF's gemma4 vocabulary.

    One approximation: a run of non-newlines that is itself a vocabulary entry is taken whole
    (tokenizers' ignore_merges), as llama.cpp takes newline runs; llama.cpp merges such a run
    instead, which differs only where the entry cannot be reached by the merges."""
    tokens = list(ck.field("tokenizer.ggml.tokens"))
    n = len(tokens)
    types = [int(t) for t in ck.field("tokenizer.ggml.token_type", [NORMAL] * n)]
    if len(types) != n:
        raise FormatError(f"{ck.path}: tokenizer.ggml.token_type does not match the {n} tokens")
    merges: List[List[str]] = []
    for m in ck.field("tokenizer.ggml.merges"):
        cut = m.find(" ", 1)  # as llama.cpp splits a merge: a piece may itself start with a space
        if cut < 0:
            raise FormatError(f"{ck.path}: tokenizer merge {m!r} is not two pieces")
        merges.append([m[:cut], m[cut + 1:]])
    bos = int(ck.field("tokenizer.ggml.bos_token_id"))
    if not 0 <= bos < n:
        raise FormatError(f"{ck.path}: tokenizer.ggml.bos_token_id {bos} is outside the {n} tokens")
    vocab, added = byte_fallback_vocabulary(ck, "a gemma4", tokens, types)
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": NEWLINE_RUNS}, "behavior": "Isolated",
                          "invert": False},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": tokens[bos], "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": tokens[bos], "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}],
                           "special_tokens": {tokens[bos]: {"id": tokens[bos], "ids": [bos], "tokens": [tokens[bos]]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": True, "ignore_merges": True,
                  "vocab": vocab, "merges": merges},
    }
    eos = ck.fields.get("tokenizer.ggml.eos_token_id")
    config = {"bos_token": tokens[bos], "add_bos_token": True, "add_eos_token": False}
    if eos is not None:
        config["eos_token"] = tokens[int(ck.field("tokenizer.ggml.eos_token_id")) % n]
    return tok, config
