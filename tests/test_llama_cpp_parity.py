"""Parity with llama.cpp: the same weights exported to GGUF (tools/export_gguf.py)
give the same logits in llama.cpp (through llama-cpp-python) as in this engine.

llama-cpp-python and gguf are test extras; .ci/run installs them. Without
them these tests are skipped with the reason.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ARCH_FIXTURES, FIXTURES, llama_logits, reference

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install -e '.[test]')")
pytest.importorskip("gguf", reason="the gguf package is not installed (pip install -e '.[test]')")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import export_gguf  # noqa: E402

import edgemoe  # noqa: E402
from edgemoe.convert import convert_hf  # noqa: E402
from edgemoe.errors import UnsupportedModelError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# Both engines compute in f32 from f32 weights, with f32 KV caches; they differ
# in summation order (ggml's SIMD dot products, its softmax and rms_norm) only.
# Measured 3.9e-7 to 8.4e-7 over the fixtures (2026-12-04, AVX-512 kernels on both sides).
REL_TOL = 1e-5


def assert_parity(hf_dir: str, emoe: str, gguf_path: str, ids) -> None:
    export_gguf.export(hf_dir, gguf_path, "f32")
    theirs = llama_logits(gguf_path, ids)
    ours = edgemoe.load(emoe, threads=1, kv_cache="f32").logits(ids)
    assert ours.shape == theirs.shape
    rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert rel < REL_TOL, f"{hf_dir}: max relative logit error vs llama.cpp {rel:.2e}"
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() >= 0.99


# The olmoe fixture uses grouped-query attention, which llama.cpp's OLMoE graph lacks (below).
@pytest.mark.parametrize("name", [n for n in ARCH_FIXTURES if n != "olmoe"])
def test_f32_logits_match_llama_cpp(name, converted, tmp_path):
    ids = reference(name)["input_ids"].tolist()
    assert_parity(str(FIXTURES / name), converted(name, "f32"), str(tmp_path / f"{name}-f32.gguf"), ids)


@pytest.fixture(scope="module")
def tiny_synthetic_olmoe(tmp_path_factory):
    """An OLMoE without grouped-query attention (the shape llama.cpp supports), from bench/make_synthetic.py."""
    out = tmp_path_factory.mktemp("synth") / "olmoe"
    subprocess.run([sys.executable, str(ROOT / "bench" / "make_synthetic.py"), str(out), "--layers", "2",
                    "--experts", "8", "--top-k", "2", "--hidden", "64", "--intermediate", "32", "--heads", "4",
                    "--dtype", "f32"], check=True, capture_output=True)
    emoe = str(out) + ".emoe"
    convert_hf(str(out), emoe, bits="f32", progress=False)
    return str(out), emoe


def test_f32_logits_match_llama_cpp_olmoe(tiny_synthetic_olmoe, tmp_path):
    hf_dir, emoe = tiny_synthetic_olmoe
    ids = np.random.default_rng(0).integers(0, 384, 40).tolist()
    assert_parity(hf_dir, emoe, str(tmp_path / "olmoe-f32.gguf"), ids)


def test_export_refuses_what_llama_cpp_cannot_run(tmp_path):
    with pytest.raises(UnsupportedModelError, match="key/value heads"):
        export_gguf.export(str(FIXTURES / "olmoe"), str(tmp_path / "x.gguf"), "f32")
    assert not os.path.exists(tmp_path / "x.gguf") and not os.path.exists(tmp_path / "x.gguf.partial")


def test_llama_cpp_quantizes_the_export(tiny_synthetic_olmoe, tmp_path):
    # the Q8_0 copy the benchmarks use: llama.cpp writes it and it stays close to f32
    hf_dir, _ = tiny_synthetic_olmoe
    ids = np.random.default_rng(1).integers(0, 384, 40).tolist()
    f32 = str(tmp_path / "olmoe-f32.gguf")
    export_gguf.export(hf_dir, f32, "f32")
    q8 = str(tmp_path / "olmoe-q8_0.gguf")
    export_gguf.quantize(f32, q8, "q8_0")
    assert os.path.getsize(q8) < os.path.getsize(f32) / 2
    a, b = llama_logits(f32, ids), llama_logits(q8, ids)
    assert np.median(np.abs(a - b) / (np.abs(a) + 1e-3)) < 0.1
