"""Run-time expert masks (`disable_experts`, `--disable-expert`): the router never chooses a masked
expert and renormalises over the rest as the architecture does, which is the model with those
experts pruned (docs/EXPERT_PRUNING.md, part A §3). Held to a numpy router (routing_reference.py)
for every kind of routing the engine has; masking nothing changes nothing, bit for bit."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

import edgemoe
from edgemoe.apps.cli import main
from edgemoe.convert import convert_hf
from edgemoe.format.model_config import moe_layers
from edgemoe.options import parse_expert_pairs

from conftest import fixture_folder
from routing_reference import by_expert, route

IDS = np.random.default_rng(24).integers(0, 384, 160).tolist()
WINDOW = 40


def _mostly_used(model, per_layer):
    """{layer: the `per_layer` experts the unmasked model uses most on IDS}: masks that matter."""
    record = model.route(IDS, WINDOW)
    out = {}
    for l in moe_layers(model.config):
        counts = np.bincount(record.experts[:, l].reshape(-1), minlength=model.config["n_experts"])
        out[l] = [int(e) for e in np.argsort(-counts, kind="stable")[:per_layer]]
    return out


def _check_against_numpy(path, masked):
    """The masked model's routing (and its own hidden states) against the numpy router with the same mask."""
    pairs = [(l, e) for l, experts in masked.items() for e in experts]
    with pytest.warns(UserWarning, match="LOSSY: disable_experts="):
        model = edgemoe.load(path, threads=2, kv_cache="f32", disable_experts=pairs)
    record = model.route(IDS, WINDOW, with_hidden=True)
    worst, compared = 0.0, 0
    for l in moe_layers(model.config):
        got_e, got_w = by_expert(record.experts[:, l], record.weights[:, l])
        assert not np.isin(got_e, masked.get(l, [])).any(), f"layer {l} chose a masked expert"
        ref_e, ref_w, decidable = route(model.container, record.hidden[:, l], l, masked.get(l, []))
        assert decidable.mean() > 0.9
        np.testing.assert_array_equal(got_e[decidable], ref_e[decidable])
        worst = max(worst, float(np.abs(got_w[decidable] - ref_w[decidable]).max()))
        compared += int(decidable.sum())
    assert compared > 0
    return worst


# Every routing the engine has: softmax with and without top-k renormalisation, top-k softmax with
# a router bias, sigmoid with a correction bias and scaling, and groups scored by max and by top-2 sum.
CASES = {
    "qwen3_moe": ("qwen3_moe", {}, 2),
    "olmoe": ("olmoe", {}, 2),
    "gpt_oss": ("gpt_oss", {}, 2),
    "deepseek_v3_sigmoid": ("deepseek_v3", dict(n_group=1, topk_group=1), 2),
    "deepseek_v2_groups_max": ("deepseek_v2_groups", {}, 1),
    "glm4_moe_groups_top2": ("glm4_moe", dict(n_group=2, topk_group=1), 1),
}


@pytest.mark.parametrize("case", CASES)
def test_masked_routing_matches_numpy_router(case, tmp_path):
    name, changes, per_layer = CASES[case]
    path = str(tmp_path / f"{case}.emoe")
    convert_hf(str(fixture_folder(tmp_path, name, **changes)), path, bits="f32", progress=False)
    masked = _mostly_used(edgemoe.load(path, threads=2, kv_cache="f32"), per_layer)
    if case == "glm4_moe_groups_top2":  # two groups of four: keep two in each
        masked = {l: experts[:1] for l, experts in masked.items()}
    worst = _check_against_numpy(path, masked)
    assert worst < 3e-6  # measured: 1.3e-7 (softmax) to 2.7e-7 (sigmoid, groups): f32 engine, float64 numpy


def test_masking_nothing_is_bit_identical(converted):
    path = converted("qwen3_moe", "8")
    plain = edgemoe.load(path, threads=2)
    none = edgemoe.load(path, threads=2, disable_experts=[])
    assert np.array_equal(none.logits(IDS[:48]), plain.logits(IDS[:48]))
    assert none.lossy == {} and none.info()["lossy"] is None


def test_masks_change_the_output_and_say_so(converted):
    path = converted("qwen3_moe", "8")
    exact = edgemoe.load(path, threads=2).logits(IDS[:48])
    with pytest.warns(UserWarning, match=r"LOSSY: disable_experts=0:1,1:3"):
        masked = edgemoe.load(path, threads=2, disable_experts="0:1, 1:3")
    assert masked.info()["lossy"] == {"disable_experts": "0:1,1:3"}
    assert not np.allclose(masked.logits(IDS[:48]), exact, atol=1e-3)
    record = masked.route(IDS[:48], 48)
    assert not (record.experts[:, 0] == 1).any() and not (record.experts[:, 1] == 3).any()


@pytest.mark.parametrize("pairs, message", [
    ([(5, 0)], "names layer 5; the model has layers 0-1"),
    ([(0, 8)], "names expert 0:8; layers have experts 0-7"),
    ([(0, -1)], "outside"),
    ([(0, 2), (0, 2)], "names expert 0:2 twice"),
    ([(0, e) for e in range(7)], "leaves layer 0 1 experts, fewer than the 2 each token is routed to"),
    ([(0, 1, 2)], "must be a \\(layer, expert\\) pair"),
    ("0-3", "'0-3' is not LAYER:EXPERT"),
])
def test_bad_masks_are_refused(converted, pairs, message):
    with pytest.raises(ValueError, match=message):
        edgemoe.load(converted("qwen3_moe", "8"), disable_experts=pairs)


def test_group_and_dense_layer_rules(tmp_path):
    path = str(tmp_path / "v3.emoe")
    convert_hf(str(fixture_folder(tmp_path, "deepseek_v3")), path, bits="8", progress=False)
    with pytest.raises(ValueError, match="layer 0, a dense layer"):
        edgemoe.load(path, disable_experts=[(0, 1)])
    # Groups of two scored by their best two: masking one leaves a group the pruned model would score
    # by its single expert, so the mask is refused rather than computing something else.
    with pytest.raises(ValueError, match="group 1 of layer 1 \\(experts 2-3\\) with 1 unmasked"):
        edgemoe.load(path, disable_experts=[(1, 2)])
    v2 = str(tmp_path / "v2.emoe")
    convert_hf(str(fixture_folder(tmp_path / "v2", "deepseek_v2_groups")), v2, bits="8", progress=False)
    edgemoe.load(v2, disable_experts=[(0, 0)])  # max scoring: one left in a group is fine...
    with pytest.raises(ValueError, match="2 emptiest groups only 2 unmasked experts, fewer than the 3"):
        edgemoe.load(v2, disable_experts=[(0, 0), (0, 2)])  # ...unless two such groups could win


def test_masked_experts_are_never_prefetched(converted):
    path = converted("qwen3_moe", "8")
    masked = {0: [0, 1, 2, 3], 1: [4, 5, 6, 7]}
    # The gate predictor guessing every expert of the next layer: without the mask it asks for 4-7 of layer 1.
    options = dict(threads=2, predictor="gate", prefetch_min_confidence=0.0, prefetch_width=8, cache_experts=2)
    for mask in ({}, masked):
        pairs = [(l, e) for l, experts in mask.items() for e in experts]
        with pytest.warns(UserWarning) if pairs else contextlib.nullcontext():
            model = edgemoe.load(path, disable_experts=pairs, **options)
        with model.record_routing() as record:
            model.generate(IDS[:8], max_tokens=8, temperature=0)
        guessed = {(int(l), int(e)) for _, l, e in record.predicted}
        assert guessed, "the predictor guessed nothing: the test would prove nothing"
        if pairs:
            assert not guessed & set(pairs)
            assert (record.experts[:, 0] >= 4).all() and (record.experts[:, 1] < 4).all()
        else:
            assert any(e >= 4 for l, e in guessed if l == 1)


def test_cli_flag(converted, capsys, tmp_path):
    path = converted("qwen3_moe", "8")
    assert main(["generate", path, "-p", "hello", "-n", "4", "--temp", "0", "--disable-expert", "0:1,0:2",
                 "--disable-expert", "1:0"]) == 0
    assert "LOSSY: disable_experts=0:1,0:2,1:0" in capsys.readouterr().err
    assert parse_expert_pairs("0:1, 2:3,") == ((0, 1), (2, 3))
