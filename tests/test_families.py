"""The newer families and rope types against transformers' own forward pass (references
recorded by tools/make_family_fixtures.py: logits over 48 tokens of text, greedy through the
KV cache)."""
import shutil

import numpy as np
import pytest

import edgemoe
from conftest import reference
from container_edit import replace_tables
from edgemoe.format.container import open_container

FAMILY_FIXTURES = ["qwen3_moe_yarn", "mixtral_dynamic", "olmoe_linear"]

# Relative error of a position's logits (max |ours - ref| / max |ref|), f32 weights and KV
# cache. Measured at most 1.9e-6 over these fixtures (the older fixtures: 1.0-2.7e-6).
F32_REL_TOL = 1e-5


def rel_error(ours, ref):
    return np.max(np.abs(ours - ref), axis=-1) / np.max(np.abs(ref), axis=-1)


def f32_logits(path, ids):
    return edgemoe.load(path, threads=2, kv_cache="f32").logits(ids)


@pytest.mark.parametrize("name", FAMILY_FIXTURES)
def test_f32_logits_match_transformers(converted, name):
    ref = reference(name)
    err = rel_error(f32_logits(converted(name, "f32"), ref["input_ids"].tolist()), ref["logits"])
    assert err.max() < F32_REL_TOL, f"worst position {err.argmax()}: relative error {err.max():.2e}"


@pytest.mark.parametrize("name", FAMILY_FIXTURES)
def test_f32_greedy_matches_transformers(converted, name):
    ref = reference(name)
    model = edgemoe.load(converted(name, "f32"), threads=2, kv_cache="f32")
    out = model.generate(ref["greedy_prompt"].tolist(), max_tokens=len(ref["greedy_ids"]), stop_at_eos=False)
    assert out == ref["greedy_ids"].tolist()


@pytest.mark.parametrize("name", ["qwen3_moe_yarn", "mixtral_dynamic", "olmoe_linear"])
def test_the_rope_scaling_is_what_the_match_rests_on(converted, name, tmp_path):
    # The same container with its rope scaling dropped: the check above must then fail.
    path = tmp_path / "unscaled.emoe"
    shutil.copy(converted(name, "f32"), path)
    cfg = dict(open_container(str(path)).config, rope_scaling="none", rope_attention_factor=1.0)
    replace_tables(path, config=cfg)
    ref = reference(name)
    err = rel_error(f32_logits(str(path), ref["input_ids"].tolist()), ref["logits"])
    assert err.max() > 100 * F32_REL_TOL


def test_dynamic_rope_stretches_the_context(converted):
    # transformers' dynamic NTK runs past max_position_embeddings (16 in the fixture) by its factor
    cfg = open_container(converted("mixtral_dynamic", "f32")).config
    assert (cfg["rope_scaling"], cfg["rope_original_max_position"], cfg["max_position"]) == ("dynamic", 16, 64)
