"""Converter behaviour and the public Python API."""
import os

import numpy as np
import pytest

import edgemoe
from edgemoe.format import quant
from edgemoe.format.container import PAGE, open_container
from edgemoe.convert import convert_hf
from conftest import FIXTURES, reference


def test_stacked_and_per_expert_checkpoints_convert_identically(converted):
    ids = reference("qwen3_moe")["input_ids"].tolist()
    a = edgemoe.load(converted("qwen3_moe", "8"), threads=1).logits(ids)
    b = edgemoe.load(converted("qwen3_moe_stacked", "8"), threads=1).logits(ids)
    np.testing.assert_array_equal(a, b)


def test_container_layout(converted):
    c = open_container(converted("mixtral", "4"))
    assert c.manifest["quantization"] == {"experts": "q4", "resident": "q8", "compression": "none"}
    for row in c.experts:
        for blob in row:
            assert blob["offset"] % PAGE == 0 and blob["type"] == "q4"
    res = c.tensors
    assert res["layers.0.router"]["type"] == "f32" and res["norm"]["type"] == "f32"
    assert res["layers.0.wq"]["type"] == "q8"
    assert c.file_size % PAGE == 0


def test_low_bit_experts_convert_and_degrade_in_order(converted):
    # 3- and 2-bit experts (the kernels themselves are checked exactly in test_kernels.py):
    # the container records them, the model runs, and logits move further from f32 as bits drop.
    ids = reference("mixtral_smooth")["input_ids"].tolist()
    full = edgemoe.load(converted("mixtral_smooth", "f32"), threads=1).logits(ids)
    errors = []
    for bits in ("8", "4", "3", "2"):
        path = converted("mixtral_smooth", bits, "8")
        c = open_container(path)
        assert {b["type"] for row in c.experts for b in row} == {"q" + bits}
        logits = edgemoe.load(path, threads=1).logits(ids)
        assert np.isfinite(logits).all()
        errors.append(float(np.median(np.abs(logits - full)) / np.median(np.abs(full))))
    assert errors == sorted(errors) and errors[0] < errors[-1], errors


def test_f32_bits_give_all_f32_container(converted):
    c = open_container(converted("olmoe", "f32"))
    types = {t["type"] for t in c.tensors.values()} | {b["type"] for r in c.experts for b in r}
    assert types == {"f32"}


def test_resident_bits_flag(converted):
    c = open_container(converted("olmoe", "4", "f16"))
    assert c.tensors["layers.0.wq"]["type"] == "f16"
    assert c.experts[0][0]["type"] == "q4"


def test_interrupted_conversion_leaves_no_file(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = quant.quantize

    def flaky(w, qtype):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real(w, qtype)

    monkeypatch.setattr(quant, "quantize", flaky)
    out = tmp_path / "m.emoe"
    with pytest.raises(KeyboardInterrupt):
        convert_hf(str(FIXTURES / "mixtral"), str(out), bits="8", progress=False)
    assert os.listdir(tmp_path) == []


def test_info_fields(converted):
    model = edgemoe.load(converted("qwen2_moe", "4"), threads=1)
    info = model.info()
    assert info["architecture"] == "qwen2_moe"
    assert len(info["expert_bits"]) == info["n_layers"]
    assert all(len(row) == info["n_experts"] and set(row) == {4} for row in info["expert_bits"])
    assert info["expert_bytes"] > 0 and info["resident_bytes"] > 0
    assert info["min_memory_budget"] > info["resident_bytes"]


def test_tokenize_roundtrip_and_streaming(converted):
    model = edgemoe.load(converted("olmoe", "8"), threads=1)
    text = "It was the best of times."
    ids = model.tokenize(text)
    assert model.detokenize(ids) == text
    whole = model.generate(text, max_tokens=12)
    pieces = list(model.generate(text, max_tokens=12, stream=True))
    assert "".join(pieces) == whole


def test_sampling_is_seeded(converted):
    model = edgemoe.load(converted("olmoe", "8"), threads=1)
    ids = reference("olmoe")["greedy_prompt"].tolist()
    kw = dict(max_tokens=10, temperature=1.0, top_p=0.9, top_k=50, stop_at_eos=False)
    a = model.generate(ids, seed=7, **kw)
    b = model.generate(ids, seed=7, **kw)
    assert a == b and len(a) == 10


def test_stats_keys(converted):
    model = edgemoe.load(converted("olmoe", "8"), threads=1)
    model.logits([1, 2, 3])
    s = model.stats()
    for key in ("cache_hits", "cache_misses", "bytes_read", "io_wait_s", "compute_s", "tokens"):
        assert key in s
    assert s["tokens"] == 3


def test_stream_decoder_never_splits_characters(converted):
    from edgemoe.tokenizer import StreamDecoder

    model = edgemoe.load(converted("olmoe", "8"), threads=1)
    text = "naïve café — 東京! 😀 and the rest, twice: naïve café — 東京! 😀"
    ids = model.tokenize(text)
    decoder = StreamDecoder(model.tokenizer)
    pieces = [decoder.push(t) for t in ids]
    assert "".join(pieces) == model.detokenize(ids) == text
    assert all("\ufffd" not in p for p in pieces)


def test_the_config_reads_back_as_written(converted):
    # The engine computes in float32, but the config Python reads from a container is the one
    # the converter wrote: 1e-6 is not float32's 9.99999997e-07, and fields it left out show
    # their defaults.
    import json

    src = json.loads((FIXTURES / "qwen3_moe" / "config.json").read_text())
    cfg = open_container(converted("qwen3_moe", "8")).config
    assert cfg["rms_norm_eps"] == src["rms_norm_eps"] == 1e-6
    assert cfg["shared_intermediate"] == 0 and cfg["shared_gate"] is False


def test_conversion_holds_a_block_of_a_large_tensor_not_all_of_it(tmp_path):
    """A 1M-token float16 embedding (268 MB as float32, 71 MB encoded) is read, quantized and
    written a block of rows at a time: the converter's peak RSS grows by well under the tensor's
    size against converting the same model with its 384-token vocabulary. Measured: +17 MiB
    (with the whole tensor read and encoded at once, as before: +421 MiB)."""
    import subprocess
    import sys

    from safetensors.numpy import load_file, save_file

    from conftest import fixture_folder

    vocab = 1 << 20
    big = fixture_folder(tmp_path / "big", "qwen3_moe", vocab_size=vocab)
    weights = load_file(str(big / "model.safetensors"))
    hidden = weights["model.embed_tokens.weight"].shape[1]
    rng = np.random.default_rng(0)
    embed = rng.standard_normal((vocab, hidden), dtype=np.float32)
    weights["model.embed_tokens.weight"] = embed.astype(np.float16)
    del embed
    save_file(weights, str(big / "model.safetensors"))

    def peak_mib(src) -> float:
        # VmHWM: this process's own peak (ru_maxrss would carry over the forking parent's, pytest's)
        code = ("from edgemoe.convert import convert_hf\n"
                f"convert_hf({str(src)!r}, {str(tmp_path / 'out.emoe')!r}, bits='8', progress=False)\n"
                "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024)")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        return float(r.stdout.strip().splitlines()[-1])

    small, large = peak_mib(FIXTURES / "qwen3_moe"), peak_mib(big)
    assert large - small < 64, (small, large)
