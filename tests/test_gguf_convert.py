"""edgemoe convert model.gguf: GGUF sources (tests/fixtures/gguf, written by tools/make_gguf_fixtures.py),
their logits against llama.cpp's on the same file, exact block copies, and bad input."""
import numpy as np
import pytest

import edgemoe
from edgemoe.format import quant
from edgemoe.apps.cli import main
from edgemoe.format.container import open_container
from edgemoe.errors import FormatError, UnsupportedModelError
from conftest import FIXTURES, llama_logits, reference

gguf = pytest.importorskip("gguf", reason="the gguf package is not installed (pip install -e '.[test]')")
from edgemoe.convert.gguf import GGUFCheckpoint, convert_gguf  # noqa: E402

GGUF = FIXTURES / "gguf"
ROOT = FIXTURES.parent.parent


def test_f32_gguf_matches_llama_cpp_and_transformers(tmp_path):
    # llama.cpp's `llama` layout permutes q/k rows; the converter must undo it exactly
    out = tmp_path / "m.emoe"
    convert_gguf(str(GGUF / "mixtral-f32.gguf"), str(out), bits="f32", progress=False)
    ids = reference("mixtral")["input_ids"].tolist()
    ours = edgemoe.load(str(out), threads=1, kv_cache="f32").logits(ids)
    hf = reference("mixtral")["logits"]
    assert np.abs(ours - hf).max() / np.abs(hf).max() < 2e-5  # transformers' forward pass: measured 1.6e-6
    theirs = llama_logits(GGUF / "mixtral-f32.gguf", ids)
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 1e-5  # measured 8.4e-7
    assert open_container(out).manifest["source"]["format"].startswith("gguf (llama")


@pytest.mark.parametrize("kind,bits", [("q8_0", "8"), ("q4_0", "4")])
def test_quantized_gguf_is_copied_exactly_and_matches_llama_cpp(kind, bits, tmp_path):
    src = GGUF / f"qwen3_moe-{kind}.gguf"
    out = tmp_path / "m.emoe"
    convert_gguf(str(src), str(out), bits=bits, progress=False)
    # Q8_0 / Q4_0 blocks are ours exactly: the experts decode to llama.cpp's own values
    ck = GGUFCheckpoint(str(src))
    t = ck.tensors["blk.1.ffn_up_exps.weight"]
    want = gguf.quants.dequantize(np.asarray(t.data[3]), t.tensor_type)
    c = open_container(out)
    blob = c.experts[1][3]
    part = blob["parts"]["up"]
    with open(out, "rb") as f:
        f.seek(blob["offset"] + part["offset"])
        raw = f.read(part["nbytes"])
    qtype = quant.CODES[blob["type"]]
    assert np.array_equal(quant.dequantize(raw, qtype, part["shape"]), want)
    # Logits against llama.cpp on the same file. Both use these weights; they differ in how
    # activations are quantized (llama.cpp rounds its scales to fp16), which the fixtures'
    # deliberately chaotic random weights amplify: measured 1.8 % (q8_0) and 3.1 % (q4_0) of
    # the largest logit, against 51-67 % for quantizing the weights at all.
    ids = reference("qwen3_moe")["input_ids"].tolist()
    ours = edgemoe.load(str(out), threads=1).logits(ids)
    theirs = llama_logits(src, ids)
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 0.1
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() >= 0.9


def test_requantizing_a_gguf_to_other_widths(tmp_path):
    out = tmp_path / "m.emoe"
    assert main(["convert", str(GGUF / "qwen3_moe-q8_0.gguf"), "-o", str(out), "--bits", "3", "-q"]) == 0
    model = edgemoe.load(str(out), threads=1)
    assert {b["type"] for row in open_container(out).experts for b in row} == {"q3"}
    assert np.isfinite(model.logits(reference("qwen3_moe")["input_ids"].tolist())).all()
    # the tokenizer rebuilt from the GGUF's vocabulary splits text as the checkpoint's own did
    from tokenizers import Tokenizer

    original = Tokenizer.from_file(str(FIXTURES / "qwen3_moe" / "tokenizer.json"))
    for text in ("Hello world", "  two  spaces, digits 12345 and UTF-8: caf\u00e9 \u4e2d\u6587\n\tend"):
        assert model.tokenize(text, add_special_tokens=False) == original.encode(text, add_special_tokens=False).ids


def test_truncated_and_garbled_gguf_fail_cleanly(tmp_path):
    data = (GGUF / "qwen3_moe-q8_0.gguf").read_bytes()
    for name, blob in (("cut.gguf", data[: len(data) // 3]), ("head.gguf", data[:64]),
                       ("noise.gguf", b"GGUF" + bytes(range(256)) * 8)):
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises((FormatError, UnsupportedModelError)):
            convert_gguf(str(path), str(tmp_path / "out.emoe"), progress=False)
        assert not (tmp_path / "out.emoe").exists()


def test_unsupported_architecture_is_named(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "g.gguf"), "gpt2")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedModelError, match="'gpt2'"):
        convert_gguf(str(tmp_path / "g.gguf"), str(tmp_path / "out.emoe"), progress=False)


def test_unsupported_gguf_version_is_named(tmp_path):
    data = bytearray((GGUF / "qwen3_moe-q8_0.gguf").read_bytes())
    data[4:8] = (99).to_bytes(4, "little")
    path = tmp_path / "v99.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="99"):
        convert_gguf(str(path), str(tmp_path / "out.emoe"), progress=False)


def tools_export_gguf():
    """tools/export_gguf.py, imported."""
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    import export_gguf

    return export_gguf


def synthetic_checkpoint(out, *args):
    """A random-weight OLMoE-shaped Hugging Face folder (bench/make_synthetic.py with `args`), and
    tools/export_gguf.py imported to write it as GGUF; skips without llama-cpp-python."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    import subprocess
    import sys

    export_gguf = tools_export_gguf()
    root = ROOT
    subprocess.run([sys.executable, str(root / "bench" / "make_synthetic.py"), str(out), *args, "--dtype", "f32"],
                   check=True, capture_output=True)
    return out, export_gguf


@pytest.fixture(scope="module")
def k_quant_ggufs(tmp_path_factory):
    """A small synthetic OLMoE (K-quants need rows of 256) as an f32 GGUF and as llama.cpp's own
    Q4_K_M and Q6_K quantizations of it."""
    tmp = tmp_path_factory.mktemp("kquant")
    hf, export_gguf = synthetic_checkpoint(tmp / "synth", "--layers", "2", "--experts", "4", "--top-k", "2",
                                           "--hidden", "256", "--intermediate", "256", "--heads", "4")
    files = {"f32": tmp / "f32.gguf"}
    export_gguf.export(str(hf), str(files["f32"]), "f32")
    for kind in ("q4_k_m", "q6_k"):
        files[kind] = tmp / f"{kind}.gguf"
        export_gguf.quantize(str(files["f32"]), str(files[kind]), kind)
    return files


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("kind", ["q4_k_m", "q6_k"])
def test_k_quant_gguf_converts(kind, k_quant_ggufs, tmp_path):
    q = k_quant_ggufs[kind]
    types = {t.tensor_type.name for t in GGUFCheckpoint(str(q)).reader.tensors}
    assert types & {"Q4_K", "Q5_K", "Q6_K"}, types
    out = tmp_path / "m.emoe"
    convert_gguf(str(q), str(out), bits="f32", progress=False)  # the K-quant values, decoded exactly
    ids = np.random.default_rng(0).integers(0, 384, 32).tolist()
    ours = edgemoe.load(str(out), threads=1).logits(ids)
    quantized, full = llama_logits(q, ids), llama_logits(k_quant_ggufs["f32"], ids)
    # We compute the quantized model llama.cpp computes (it also quantizes activations, we do not
    # with f32 weights): our logits are much closer to its quantized model's than its own
    # unquantized model's are (measured q6_k: 0.041 vs 0.128).
    assert rel(ours, quantized) < 0.5 * rel(full, quantized), (rel(ours, quantized), rel(full, quantized))


def test_q4_k_blocks_are_copied_exactly_as_q4k(k_quant_ggufs, tmp_path):
    src = k_quant_ggufs["q4_k_m"]
    out = tmp_path / "m.emoe"
    assert main(["convert", str(src), "-o", str(out), "--bits", "4k", "-q"]) == 0
    c = open_container(out)
    assert {b["type"] for row in c.experts for b in row} == {"q4k"}
    ck = GGUFCheckpoint(str(src))
    copied = 0
    for layer in range(2):
        for part, name in (("gate", "ffn_gate_exps"), ("up", "ffn_up_exps"), ("down", "ffn_down_exps")):
            t = ck.tensors[f"blk.{layer}.{name}.weight"]
            if t.tensor_type.name != "Q4_K":
                continue  # Q4_K_M keeps some tensors at Q6_K: those are re-encoded
            blob = c.experts[layer][1]
            p = blob["parts"][part]
            with open(out, "rb") as f:
                f.seek(blob["offset"] + p["offset"])
                raw = np.frombuffer(f.read(p["nbytes"]), np.uint8)
            assert np.array_equal(raw, np.asarray(t.data[1]).view(np.uint8).reshape(-1))  # byte for byte
            copied += 1
    assert copied >= 3
    # The same weights as llama.cpp's Q4_K_M model wherever it used Q4_K; both engines quantize
    # activations (llama.cpp per 256 with fp32 scales, we per 32).
    ids = np.random.default_rng(0).integers(0, 384, 32).tolist()
    ours = edgemoe.load(str(out), threads=1).logits(ids)
    quantized, full = llama_logits(src, ids), llama_logits(k_quant_ggufs["f32"], ids)
    assert rel(ours, quantized) < 0.5 * rel(full, quantized), (rel(ours, quantized), rel(full, quantized))


def test_fuzz_finding_huge_metadata_array_is_refused_fast(tmp_path):
    # tools/fuzz_parsers.py found a GGUF whose metadata array count made the gguf package's
    # reader run for minutes; the converter now walks the header with bounds first.
    # (the message comes from that walk, so the reader never saw the file)
    with pytest.raises(FormatError, match="GGUF header claims .* past the end"):
        convert_gguf(str(FIXTURES / "fuzz" / "gguf-huge-array.gguf"), str(tmp_path / "out.emoe"), progress=False)
    with pytest.raises(FormatError, match="too short"):
        (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
        convert_gguf(str(tmp_path / "tiny.gguf"), str(tmp_path / "out.emoe"), progress=False)


def test_unsupported_tokenizer_and_auto_bits_are_refused_by_name(tmp_path, monkeypatch):
    from edgemoe.convert.gguf import tokenizer_section

    ck = GGUFCheckpoint(str(GGUF / "qwen3_moe-q8_0.gguf"))
    real = ck.field
    monkeypatch.setattr(ck, "field", lambda key, default=None: "t5" if key == "tokenizer.ggml.model"
                        else real(key, default))
    with pytest.raises(UnsupportedModelError, match="tokenizer type 't5'"):
        tokenizer_section(ck)
    monkeypatch.setattr(ck, "field", lambda key, default=None: "deepseek-llm" if key == "tokenizer.ggml.pre"
                        else real(key, default))
    with pytest.raises(UnsupportedModelError, match="pre-tokenizer 'deepseek-llm'"):
        tokenizer_section(ck)
    calib = tmp_path / "c.txt"
    calib.write_text("some text " * 50)
    assert main(["convert", str(GGUF / "qwen3_moe-q8_0.gguf"), "-o", str(tmp_path / "a.emoe"), "--bits", "auto",
                 "--calib", str(calib), "--target-size", "1MB"]) == 1
    assert not (tmp_path / "a.emoe").exists()


# Text where GPT-2's and Qwen2's splits may differ: digit runs, upper-case contractions,
# newlines and space runs, non-Latin letters, punctuation runs.
PRE_TOKENIZER_TEXTS = [
    "In 1611 the King James Bible had 31102 verses; chapter 3:16, verse 2026.",
    "DON'T SHOUT, I'LL hear you. She'd've known, THEY'RE here.",
    "line one\n\n\nline two\r\n   indented    words  \t tab\n",
    "Ünïcödé naïve café — “quotes” … 北京 東京 Москва",
    "!!! ??? ... --- $$$ 3.14159 +42 -7 0x1F",
]


@pytest.fixture(scope="module")
def qwen2_vocab_gguf(tmp_path_factory):
    """A tiny model whose GGUF carries the demo model's 8192-token byte-level BPE vocabulary under
    llama.cpp's "qwen2" pre-tokenizer type (llama.cpp then tokenizes it the Qwen2 way)."""
    import json

    tmp = tmp_path_factory.mktemp("qwen2pre")
    hf, export_gguf = synthetic_checkpoint(tmp / "synth", "--layers", "1", "--experts", "2", "--top-k", "1",
                                           "--hidden", "64", "--intermediate", "64", "--heads", "2", "--vocab", "8192")
    demo = open_container(edgemoe.default_model_path()).manifest["tokenizer"]
    (hf / "tokenizer.json").write_text(demo["tokenizer_json"])
    (hf / "tokenizer_config.json").write_text(json.dumps({}))
    files = {}
    for pre in ("qwen2", "default"):
        files[pre] = tmp / f"{pre}.gguf"
        export_gguf.export(str(hf), str(files[pre]), "f32", tokenizer_pre=pre)
    return files


def llama_tokens(path, text):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)


def test_qwen2_pre_tokenizer_tokenizes_as_llama_cpp(qwen2_vocab_gguf, tmp_path):
    out = tmp_path / "m.emoe"
    convert_gguf(str(qwen2_vocab_gguf["qwen2"]), str(out), bits="8", progress=False)
    model = edgemoe.load(str(out), threads=1)
    differs = 0
    for text in PRE_TOKENIZER_TEXTS:
        want = llama_tokens(qwen2_vocab_gguf["qwen2"], text)
        assert model.tokenize(text, add_special_tokens=False) == want, text
        differs += want != llama_tokens(qwen2_vocab_gguf["default"], text)
    # the texts do tell the two pre-tokenizers apart, so the test would catch the wrong one
    assert differs >= 2  # measured: the two texts with digits


# ---------------------------------------------------------------- gpt-oss (tools/make_gguf_fixtures.py)

def test_gpt_oss_f32_gguf_matches_llama_cpp(tmp_path):
    # Sinks, sliding layers, YaRN as llama.cpp computes it (ramp ends rounded to whole
    # dimensions), biases, llama.cpp's fixed swiglu limit 7. Measured 2.2e-6 relative; the
    # same container with the ramp unrounded gives 1.3e-2, with transformers' limit 1.5 0.72.
    out = tmp_path / "m.emoe"
    convert_gguf(str(GGUF / "gpt_oss-f32.gguf"), str(out), bits="f32", progress=False)
    ids = reference("gpt_oss_mxfp4")["input_ids"].tolist()
    ours = edgemoe.load(str(out), threads=2, kv_cache="f32").logits(ids)
    theirs = llama_logits(GGUF / "gpt_oss-f32.gguf", ids)
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 2e-5
    cfg = open_container(out).config
    assert (cfg["architecture"], cfg["yarn_truncate"], cfg["swiglu_limit"], cfg["sliding_layers"]) == \
        ("gpt_oss", True, 7.0, [0, 2])


def test_gpt_oss_mxfp4_gguf_blocks_are_copied_exactly(tmp_path):
    src = GGUF / "gpt_oss-mxfp4.gguf"
    out = tmp_path / "m.emoe"
    convert_gguf(str(src), str(out), bits="mxfp4", resident_bits="f32", progress=False)
    ck = GGUFCheckpoint(str(src))
    entry = open_container(out).experts[2][5]
    with open(out, "rb") as f:
        for part in ("gate", "up", "down"):
            t = ck.tensors[f"blk.2.ffn_{part}_exps.weight"]
            assert t.tensor_type == gguf.GGMLQuantizationType.MXFP4
            f.seek(entry["offset"] + entry["parts"][part]["offset"])
            assert f.read(entry["parts"][part]["nbytes"]) == np.ascontiguousarray(t.data[5]).tobytes()
    # Both engines round the activations to 8 bits for the MXFP4 products, llama.cpp with fp16
    # scales and ours with f32 ones: median relative error measured 0.0055 (max 0.015).
    ids = reference("gpt_oss_mxfp4")["input_ids"].tolist()
    ours = edgemoe.load(str(out), threads=2, kv_cache="f32").logits(ids)
    theirs = llama_logits(src, ids)
    rel = np.abs(ours - theirs).max(-1) / np.abs(theirs).max(-1)
    assert np.median(rel) < 0.05


# ---------------------------------------------------------------- GLM-4.5 and DeepSeek (tools/make_gguf_fixtures.py)

@pytest.mark.parametrize("name,architecture", [("glm4_moe", "glm4_moe"), ("deepseek_v2", "deepseek_v2"),
                                               ("deepseek_v3", "deepseek_v3")])
def test_dense_leading_layers_and_latent_attention_ggufs_match_llama_cpp(tmp_path, name, architecture):
    # Dense first layers; deepseek2's latent attention (attn_k_b / attn_v_b back into kv_b,
    # adjacent rotary pairs, YaRN's mscale from yarn_log_multiplier); softmax (V2) or sigmoid
    # group (V3, GLM) routing. Measured against llama.cpp on the same file: 1.4e-6 (glm4moe),
    # 2.1e-6 (deepseek2 softmax), 2.0e-6 (sigmoid); against transformers 2.1-3.8e-6.
    src = GGUF / f"{name}-f32.gguf"
    out = tmp_path / "m.emoe"
    convert_gguf(str(src), str(out), bits="f32", progress=False)
    ref = reference(name)
    ids = ref["input_ids"].tolist()
    ours = edgemoe.load(str(out), threads=2, kv_cache="f32").logits(ids)
    theirs = llama_logits(src, ids)
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 2e-5
    assert np.abs(ours - ref["logits"]).max() / np.abs(ref["logits"]).max() < 3e-5  # measured 2.1e-6 to 3.8e-6
    cfg = open_container(out).config
    assert (cfg["architecture"], cfg["dense_layers"]) == (architecture, [0])


def test_multi_token_prediction_blocks_are_not_run(tmp_path):
    # llama.cpp's GLM-4.5 and DeepSeek GGUFs count their MTP layer in block_count
    # (nextn_predict_layers); a converter that ran it as a layer would still load the file.
    src = tmp_path / "nextn.gguf"
    tools_export_gguf().export(str(FIXTURES / "glm4_moe"), str(src), "f32", nextn=1)
    out = tmp_path / "m.emoe"
    convert_gguf(str(src), str(out), bits="f32", progress=False)
    assert open_container(out).config["n_layers"] == 3
    ids = reference("glm4_moe")["input_ids"].tolist()
    ours = edgemoe.load(str(out), threads=2, kv_cache="f32").logits(ids)
    theirs = llama_logits(src, ids)
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 2e-5


def checkpoint_with(monkeypatch, name, drop=(), **fields):
    """The GGUF fixture `name` with metadata fields replaced (or dropped) as the converter reads them."""
    ck = GGUFCheckpoint(str(GGUF / f"{name}.gguf"))
    real = ck.field
    monkeypatch.setattr(ck, "fields", {k: v for k, v in ck.fields.items() if k not in drop})
    monkeypatch.setattr(ck, "field", lambda key, default=None: fields[key] if key in fields else
                        (real(key, default) if key not in drop else (default if default is not None else
                                                                     real("no such key " + key))))
    return ck


def test_a_glm_rotary_count_survives_the_ratio_round_trip(monkeypatch):
    # 30 of 44 dims: 30 / 44 * 44 is 29.999..., which int() would make 29 (odd, refused)
    from edgemoe.convert.gguf import hf_config
    from edgemoe.convert.arch_glm4_moe import Glm4Moe

    ck = checkpoint_with(monkeypatch, "glm4_moe-f32", **{"glm4moe.attention.key_length": 44,
                                                         "glm4moe.rope.dimension_count": 30})
    assert Glm4Moe().config(hf_config(ck))["rotary_dim"] == 30


@pytest.mark.parametrize("name,drop,fields,error,message", [
    ("deepseek_v2-f32", ("deepseek2.attention.key_length_mla",), {}, UnsupportedModelError,
     "from before llama.cpp split kv_b"),
    ("deepseek_v2-f32", (), {"deepseek2.attention.value_length_mla": 16}, FormatError,
     "do not split keys and values as attention.key_length_mla / value_length_mla say"),
    ("glm4_moe-f32", (), {"glm4moe.attention.key_length": 0}, FormatError, "attention.key_length is 0"),
])
def test_inconsistent_latent_and_glm_metadata_is_refused(monkeypatch, name, drop, fields, error, message):
    from edgemoe.convert.gguf import hf_config

    with pytest.raises(error, match=message):
        hf_config(checkpoint_with(monkeypatch, name, drop, **fields))
