"""A SentencePiece GGUF vocabulary (tokenizer.ggml.model = "llama": Llama, Mistral, Mixtral and
their kin) as a `tokenizers` BPE that splits text exactly as llama.cpp's SPM tokenizer does.

llama.cpp (src/llama-vocab.cpp, llm_tokenizer_spm) escapes spaces as U+2581, prefixes one to the
text and to every text run after a split-out special token, starts from single characters and
repeatedly joins the adjacent pair whose joined text is a vocabulary entry of the highest score
(the leftmost on a tie); what is left outside the vocabulary falls back to <0xXX> byte tokens.
A BPE whose merges are every such pair, ranked by the joined piece's score, does the same:
Hugging Face's Llama tokenizers are built that way (transformers' SpmConverter). Decoding turns
U+2581 back into spaces, byte tokens into bytes, and drops the prefixed space.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from ..errors import FormatError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"


def merges_by_score(tokens: List[str], scores: List[float]) -> List[Tuple[str, str]]:
    """Every split of a piece into two vocabulary pieces, the highest-scoring joined piece first
    (ties: the lower id, then the earlier split)."""
    index = {}
    for i, t in enumerate(tokens):
        index.setdefault(t, i)
    ranked = []
    for t, i in index.items():
        for k in range(1, len(t)):
            a, b = t[:k], t[k:]
            if a in index and b in index:
                ranked.append((-scores[i], i, k, a, b))
    ranked.sort()
    return [(a, b) for *_, a, b in ranked]


def byte_fallback_vocabulary(ck, kind: str, tokens: List[str], types: List[int]):
    """(vocab, added_tokens) of a vocabulary that spells what it lacks in <0xXX> byte tokens: the
    first id of each piece, and its control, user-defined and unknown tokens as tokenizers' added
    tokens (matched in the raw text, as llama.cpp splits them out). FormatError if a byte token
    is missing (llama.cpp could not encode every text either)."""
    if not all(f"<0x{b:02X}>" in tokens for b in range(256)):
        raise FormatError(f"{ck.path}: {kind} vocabulary without all 256 <0xXX> byte tokens is not supported "
                          f"(llama.cpp cannot encode every text with it either)")
    vocab: Dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": kind_ != USER_DEFINED}
             for i, (t, kind_) in enumerate(zip(tokens, types)) if kind_ in (CONTROL, USER_DEFINED, UNKNOWN)]
    return vocab, added


def spm_tokenizer(ck) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(tokenizer.json, tokenizer_config) for the GGUF's SentencePiece vocabulary."""
    tokens = list(ck.field("tokenizer.ggml.tokens"))
    n = len(tokens)
    scores = [float(s) for s in ck.field("tokenizer.ggml.scores", [0.0] * n)]
    types = [int(t) for t in ck.field("tokenizer.ggml.token_type", [NORMAL] * n)]
    if len(scores) != n or len(types) != n:
        raise FormatError(f"{ck.path}: tokenizer.ggml.scores / token_type do not match the {n} tokens")
    ids = {key: int(ck.field(f"tokenizer.ggml.{key}_token_id", default)) for key, default in
           (("bos", 1), ("eos", 2), ("unknown", 0))}
    add_bos = bool(ck.field("tokenizer.ggml.add_bos_token", True))
    add_eos = bool(ck.field("tokenizer.ggml.add_eos_token", False))
    add_space_prefix = bool(ck.field("tokenizer.ggml.add_space_prefix", True))
    for key, i in ids.items():
        if not 0 <= i < n:
            raise FormatError(f"{ck.path}: tokenizer.ggml.{key}_token_id {i} is outside the {n} tokens")
    vocab, added = byte_fallback_vocabulary(ck, "a SentencePiece", tokens, types)
    escape = [{"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]
    prefix = [{"type": "Prepend", "prepend": SPACE}] if add_space_prefix else []
    bos, eos = tokens[ids["bos"]], tokens[ids["eos"]]
    single = ([{"SpecialToken": {"id": bos, "type_id": 0}}] if add_bos else []) + \
        [{"Sequence": {"id": "A", "type_id": 0}}] + ([{"SpecialToken": {"id": eos, "type_id": 0}}] if add_eos else [])
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": prefix + escape},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing", "single": single, "pair": single + single,
                           "special_tokens": {t: {"id": t, "ids": [vocab[t]], "tokens": [t]}
                                              for t, on in ((bos, add_bos), (eos, add_eos)) if on}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}] + ([{"type": "Strip", "content": " ", "start": 1, "stop": 0}] if add_space_prefix else [])},
        "model": {"type": "BPE", "dropout": None, "unk_token": tokens[ids["unknown"]], "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [list(m) for m in merges_by_score(tokens, scores)]},
    }
    config = {"bos_token": bos, "eos_token": eos, "add_bos_token": add_bos, "add_eos_token": add_eos}
    return tok, config
