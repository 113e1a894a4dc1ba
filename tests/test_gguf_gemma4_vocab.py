"""Gemma 4 GGUF vocabularies (tokenizer.ggml.model = "gemma4", as llama.cpp's converter writes
them): the rebuilt tokenizer splits text as llama.cpp does and decodes as it does.

The vocabulary is built here: 3 control tokens, the 256 byte tokens, pieces with U+2581 for spaces
learned by a BPE trainer on a few paragraphs, and a run of three newlines that no merge makes
(llama.cpp looks newline runs up whole); the weights are the gemma4 fixture's (384 tokens)."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import edgemoe
from conftest import FIXTURES, reference, rel_error

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install -e '.[test]')")
gguf = pytest.importorskip("gguf", reason="the gguf package is not installed (pip install -e '.[test]')")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import export_gguf  # noqa: E402

from edgemoe.convert.gguf import convert_gguf  # noqa: E402
from test_gguf_spm import (TEXTS, TRAINING_TEXT, assert_decodes_as_llama_cpp, assert_tokenizes_as_llama_cpp,  # noqa: E402,E501
                           both_vocabularies)

VOCAB = 384
SPECIALS = ["<bos>", "<eos>", "<start_of_turn>"]
NEWLINES = "\n\n\n"
GEMMA4_TEXTS = TEXTS + ["<bos>inline<start_of_turn>user\nHi", "para one\n\n\npara two\n\nthree\n", "\n"]


def gemma4_tokenizer_json() -> dict:
    """A tokenizer.json in the shape Gemma 4's has: U+2581 for spaces, byte fallback, merges."""
    from tokenizers import Regex, Tokenizer as HFTokenizer, models, normalizers, pre_tokenizers, trainers

    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = HFTokenizer(models.BPE(byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[^\\n]+|[\\n]+"), behavior="isolated")
    tok.train_from_iterator(TRAINING_TEXT.split("\n"), trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIALS + byte_tokens, show_progress=False))
    data = json.loads(tok.to_str())
    vocab, merges = data["model"]["vocab"], data["model"]["merges"]
    last = max(vocab, key=vocab.get)  # the last merge's piece gives way to the newline run
    merges = [m for m in merges if "".join(m if isinstance(m, list) else m.split(" ")) != last]
    vocab[NEWLINES] = vocab.pop(last)
    data["model"].update(vocab=vocab, merges=merges)
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in SPECIALS]
    assert len(vocab) == VOCAB
    return data


@pytest.fixture(scope="module")
def gemma4_vocab_gguf(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gemma4vocab")
    src = tmp / "src"
    shutil.copytree(FIXTURES / "gemma4", src)
    (src / "tokenizer.json").write_text(json.dumps(gemma4_tokenizer_json()))
    path = tmp / "gemma4-vocab-f32.gguf"
    export_gguf.export(str(src), str(path), "f32", gemma4_bos=0)
    return path


@pytest.fixture(scope="module")
def vocabularies(gemma4_vocab_gguf):
    return both_vocabularies(gemma4_vocab_gguf)


@pytest.mark.parametrize("text", GEMMA4_TEXTS)
def test_tokenization_is_llama_cpps(text, vocabularies):
    assert_tokenizes_as_llama_cpp(text, vocabularies)


def test_a_newline_run_is_one_token_though_no_merge_makes_it(vocabularies):
    ours = vocabularies[1]
    newlines = ours.encode(NEWLINES, add_special_tokens=False)
    assert len(newlines) == 1 and newlines != ours.encode("\n", add_special_tokens=False) * 3


@pytest.mark.parametrize("text", [t for t in GEMMA4_TEXTS if "<bos>" not in t])
def test_decoding_gives_the_text_back_as_llama_cpp_does(text, vocabularies):
    assert_decodes_as_llama_cpp(text, vocabularies)


def test_a_gemma4_gguf_with_its_own_vocabulary_converts_and_runs(gemma4_vocab_gguf, tmp_path):
    out = tmp_path / "m.emoe"
    convert_gguf(str(gemma4_vocab_gguf), str(out), bits="f32", progress=False)
    model = edgemoe.load(str(out), threads=2, kv_cache="f32")
    assert model.tokenize("It was the best")[0] == 0  # <bos> first
    ref = reference("gemma4")
    assert rel_error(np.asarray(model.logits(ref["input_ids"].tolist())), ref["logits"]).max() < 5e-5
