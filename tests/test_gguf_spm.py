"""SentencePiece GGUF vocabularies (tokenizer.ggml.model = "llama", as Mixtral's and Mistral's
GGUFs carry): the rebuilt tokenizer splits text exactly as llama.cpp does and decodes as it does.

The vocabulary is built here: 3 control tokens, the 256 byte tokens and SentencePiece-style
pieces (U+2581 for spaces) learned by a BPE trainer on a few paragraphs, scored by merge order;
the weights are the mixtral fixture's (384 tokens)."""
import sys
from pathlib import Path

import numpy as np
import pytest

import edgemoe
from conftest import FIXTURES, reference

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install -e '.[test]')")
gguf = pytest.importorskip("gguf", reason="the gguf package is not installed (pip install -e '.[test]')")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import export_gguf  # noqa: E402

from edgemoe.convert.gguf import GGUFCheckpoint, convert_gguf, tokenizer_section  # noqa: E402
from edgemoe.tokenizer import Tokenizer  # noqa: E402

TRAINING_TEXT = """\
It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of
foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light,
it was the season of Darkness, it was the spring of hope, it was the winter of despair.
Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse,
and nothing particular to interest me on shore, I thought I would sail about a little and see the
watery part of the world. There were 1234 ships and 56 boats in the harbour in 1851.
"""
TEXTS = [
    "Hello world",
    "It was the best of times, it was the worst of times.",
    "  two leading spaces,\ttab and\n\nnewlines   and a run of spaces    ",
    "Numbers: 0 7 42 1851 3.14159 -273.15 1,000,000",
    "naïve café — 東京 and Привет мир, 😀 emoji",
    "<s> a control token inline </s> and after",
    "",
    " ",
    "\u2581already escaped\u2581",
    "unknown bytes: \x01\x7f and ąčęėįšųūž",
]


def spm_vocab(size: int):
    """[(piece, score, type)] of `size` entries: <unk> <s> </s>, the byte tokens, then pieces."""
    from tokenizers import Tokenizer as HFTokenizer, models, normalizers, pre_tokenizers, trainers

    n_pieces = size - 3 - 256
    tok = HFTokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never")
    tok.train_from_iterator(TRAINING_TEXT.split("\n"), trainers.BpeTrainer(vocab_size=n_pieces, show_progress=False))
    model = tok.to_str()
    import json

    learned = json.loads(model)["model"]
    merged = ["".join(m if isinstance(m, str) else m) if isinstance(m, list) else m.replace(" ", "")
              for m in learned["merges"]]
    alphabet = [p for p, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]) if len(p) == 1]
    pieces = [(p, -1e4 - i, 1) for i, p in enumerate(alphabet)] + [(p, -float(i), 1) for i, p in enumerate(merged)]
    pieces = pieces[:n_pieces]
    assert len(pieces) == n_pieces, len(pieces)
    specials = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
    return specials + [(f"<0x{b:02X}>", 0.0, 6) for b in range(256)] + pieces


@pytest.fixture(scope="module")
def spm_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("spm") / "mixtral-spm-f32.gguf"
    export_gguf.export(str(FIXTURES / "mixtral"), str(path), "f32", spm_vocab=spm_vocab(384))
    return path


def both_vocabularies(gguf_path):
    """llama.cpp's vocabulary of the GGUF and ours rebuilt from it."""
    return (llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False),
            Tokenizer(tokenizer_section(GGUFCheckpoint(str(gguf_path))), str(gguf_path)))


def assert_tokenizes_as_llama_cpp(text, vocabularies):
    """With and without the special tokens the vocabulary adds, ours splits text as llama.cpp."""
    llama_vocab, ours = vocabularies
    assert ours.encode(text) == llama_vocab.tokenize(text.encode(), add_bos=True, special=True)
    assert ours.encode(text, add_special_tokens=False) == llama_vocab.tokenize(text.encode(), add_bos=False,
                                                                                 special=True)


def assert_decodes_as_llama_cpp(text, vocabularies):
    """text's ids (without added special tokens) decode as llama.cpp's llama_detokenize decodes them."""
    llama_vocab, ours = vocabularies
    ids = ours.encode(text, add_special_tokens=False)
    assert ours.decode(ids, skip_special_tokens=True) == llama_detokenize(llama_vocab, ids, remove_special=True)


@pytest.fixture(scope="module")
def vocabularies(spm_gguf):
    return both_vocabularies(spm_gguf)


@pytest.mark.parametrize("text", TEXTS)
def test_tokenization_is_llama_cpps(text, vocabularies):
    assert_tokenizes_as_llama_cpp(text, vocabularies)


def llama_detokenize(llm, ids, remove_special: bool) -> str:
    """llama.cpp's own llama_detokenize (the Python wrapper's detokenize keeps the leading space)."""
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    buf = bytes(4096)
    n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, len(buf), remove_special, False)
    assert 0 <= n < len(buf)
    return buf[:n].decode("utf-8", errors="replace")


# One deliberate difference: ids that start with <s> decode with the space after it kept by
# llama.cpp and dropped by transformers' Llama tokenizers, and by us.
@pytest.mark.parametrize("text", [t for t in TEXTS if not t.startswith("<s>")])
def test_decoding_gives_the_text_back_as_llama_cpp_does(text, vocabularies):
    assert_decodes_as_llama_cpp(text, vocabularies)


def test_a_mixtral_gguf_with_a_sentencepiece_vocabulary_converts_and_runs(spm_gguf, tmp_path):
    # the README's `edgemoe convert mixtral-q4_k_m.gguf` shape: a Mixtral GGUF, SentencePiece vocabulary
    out = tmp_path / "m.emoe"
    convert_gguf(str(spm_gguf), str(out), bits="8", progress=False)
    model = edgemoe.load(str(out), threads=2)
    ids = model.tokenize("It was the best of times")
    assert ids[0] == 1 and len(ids) > 2  # <s>, then pieces
    text = "".join(model.generate("It was the best of times", max_tokens=8, stream=True))
    assert isinstance(text, str)
    ref = reference("mixtral")  # the same weights: the same logits as the BPE-vocabulary conversion
    logits = edgemoe.load(str(out), threads=2).logits(ref["input_ids"].tolist())
    assert np.median(np.abs(logits - ref["logits"]).max(-1) / np.abs(ref["logits"]).max(-1)) < 0.1


def test_a_vocabulary_without_byte_tokens_is_refused_by_name(tmp_path):
    vocab = spm_vocab(384)
    vocab[3 + 0x41] = ("A-not-a-byte", 0.0, 1)
    path = tmp_path / "nobytes.gguf"
    export_gguf.export(str(FIXTURES / "mixtral"), str(path), "f32", spm_vocab=vocab)
    with pytest.raises(edgemoe.FormatError, match="without all 256 <0xXX> byte tokens"):
        convert_gguf(str(path), str(tmp_path / "m.emoe"), progress=False)
    assert not (tmp_path / "m.emoe").exists()
