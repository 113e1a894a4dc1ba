"""The fp16 KV cache (load(kv_cache="f16"), --kv-cache f16): half the memory, close to transformers,
the same as itself whether the context was filled by a prompt pass or token by token."""
import subprocess
import sys

import numpy as np
import pytest

import edgemoe
from conftest import ARCH_FIXTURES, reference
from test_parity import F32_REL_TOL, rel_error

# fp16 keeps 11 significant bits (relative rounding <= 4.9e-4 per cached value). Measured on the
# f32 containers against transformers: 5.5e-4 (olmoe) .. 2.0e-3 (mixtral) at the worst position,
# 3e-4 .. 7e-4 at the median. The f32 cache is held to F32_REL_TOL (test_parity.py).
KV_F16_REL_TOL = 5e-3


@pytest.mark.parametrize("name", ARCH_FIXTURES)
def test_f16_cache_logits_close_to_transformers(converted, name):
    ref = reference(name)
    ids = ref["input_ids"].tolist()
    model = edgemoe.load(converted(name, "f32"), threads=2, kv_cache="f16")
    logits = model.logits(ids)
    err = rel_error(logits, ref["logits"])
    assert err.max() < KV_F16_REL_TOL, f"worst position {err.argmax()}: relative error {err.max():.2e}"
    # not the f32 cache by accident: rounding K and V to fp16 must show
    assert err.max() > F32_REL_TOL / 100
    # token by token over the same positions: the same cached values, the same logits
    model.reset()
    model.eval(ids[:4])
    steps = np.stack([model.eval([t]) for t in ids[4:9]])
    np.testing.assert_array_equal(steps, logits[4:9])  # measured bit-identical on every fixture


def test_f16_cache_halves_the_kv_memory(converted):
    path = converted("qwen3_moe", "8")
    f32 = edgemoe.load(path, ctx_size=256, kv_cache="f32").info()["memory_plan"]["kv_cache_bytes"]
    f16 = edgemoe.load(path, ctx_size=256, kv_cache="f16").info()["memory_plan"]["kv_cache_bytes"]
    assert f16 * 2 == f32 > 0


def test_bad_kv_cache_type_is_refused(converted):
    with pytest.raises(ValueError, match="unknown kv_cache 'q8'"):
        edgemoe.load(converted("qwen3_moe", "8"), kv_cache="q8")


def test_cli_flag():
    def generate(*flags):
        return subprocess.run([sys.executable, "-m", "edgemoe", "generate", "-p", "Once upon a time", "-n", "8",
                               "--temp", "0", "--ctx-size", "64", *flags], capture_output=True, text=True, timeout=120)

    out = generate("--kv-cache", "f16")
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    bad = generate("--kv-cache", "q8")
    assert bad.returncode != 0 and "invalid choice" in bad.stderr
