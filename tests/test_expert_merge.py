"""Expert merging (`edgemoe convert --merge-experts F --calib TEXT`, MC-SMoE; edgemoe/offline/expert_reduce.py):
the router keeps every output and reaches the merged experts through the container's expert_map;
groups follow router-logit similarity; merging aligns neurons first, so a permuted copy merges
exactly; bad requests and bad maps are refused."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import edgemoe
from edgemoe.apps.cli import main
from edgemoe.convert import convert_hf
from edgemoe.convert.expert_plan import ExpertPlan
from edgemoe.format.container import open_container
from edgemoe.format.model_config import moe_layers
from edgemoe.offline.calibration import calibration_run, source_experts
from edgemoe.offline.expert_merge import align, group_experts, logit_similarity, merge_group, merge_plan, plan_merging

from conftest import FIXTURES, fixture_folder
from container_edit import assert_config_edit_refused
from reduction_cli import CALIB, reduced_at_widths
from routing_reference import by_expert, route

IDS = np.random.default_rng(43).integers(0, 384, 96).tolist()


def _merge(src, out, fraction, bits="f32"):
    plan = plan_merging(str(src), lambda path: convert_hf(str(src), path, bits="8", progress=False), CALIB, fraction)
    convert_hf(str(src), str(out), bits=bits, progress=False, expert_plan=plan)
    return plan


def _fold(mapped, weights):
    """Router choices mapped to experts, a repeated expert folded into its first choice (as the engine does)."""
    ids, w = mapped.copy(), weights.copy()
    for t in range(len(ids)):
        for r in range(1, ids.shape[1]):
            for q in range(r):
                if ids[t, q] == ids[t, r] and ids[t, q] >= 0:
                    w[t, q] += w[t, r]
                    ids[t, r], w[t, r] = -1, 0.0
                    break
    return ids, w


@pytest.mark.parametrize("name, changes", [("qwen3_moe", {}), ("olmoe", {}), ("deepseek_v3", dict(n_group=1, topk_group=1)),
                                           ("glm4_moe", {})])
def test_merged_routing_is_the_routers_own_mapped_to_the_groups(name, changes, tmp_path):
    src = fixture_folder(tmp_path, name, **changes)
    merged = tmp_path / "m.emoe"
    plan = _merge(src, merged, 0.5)
    model = edgemoe.load(str(merged), threads=2, kv_cache="f32")
    cfg = model.config
    assert cfg["n_experts"] == 4 and cfg["router_experts"] == 8
    record = model.route(IDS, 48, with_hidden=True)
    folded = 0
    for l in moe_layers(cfg):
        # the reference router in router space (all 8 outputs), then through the map
        ref_e, ref_w, decidable = route(model.container, record.hidden[:, l], l)
        order = np.argsort(-ref_w, axis=1, kind="stable")  # the engine folds into the heavier choice
        ref_e, ref_w = np.take_along_axis(ref_e, order, 1), np.take_along_axis(ref_w, order, 1)
        want_e, want_w = _fold(np.asarray(plan.expert_map[l])[ref_e], ref_w)
        folded += int((want_e == -1).sum())
        got_e, got_w = by_expert(record.experts[:, l], record.weights[:, l])
        want_e, want_w = by_expert(want_e, want_w)
        np.testing.assert_array_equal(got_e[decidable], want_e[decidable])
        np.testing.assert_allclose(got_w[decidable], want_w[decidable], rtol=0, atol=3e-6)
    assert folded > 0, "no token chose two members of one group: the folding went untested"


def test_grouping_follows_frequency_and_logit_similarity(tmp_path):
    src = str(FIXTURES / "qwen3_moe")
    source = source_experts(src)
    with calibration_run(lambda p: convert_hf(src, p, bits="8", progress=False), CALIB, str(tmp_path / "x")) as run:
        for l in moe_layers(source.cfg):
            z = source.router_logits(l, run.hidden[:, l])
            sim = logit_similarity(z)
            for i in range(8):
                for j in range(8):
                    a, b = z[:, i], z[:, j]
                    assert sim[i, j] == pytest.approx((a @ b / np.linalg.norm(a) / np.linalg.norm(b) + 1) / 2, abs=1e-12)
            freq = np.bincount(run.experts[:, l].reshape(-1), minlength=8) / len(run.ids)
            slots, groups = group_experts(freq, sim, 3)
            top = sorted(np.argsort(-freq, kind="stable")[:3].tolist())
            assert slots == top
            plan = merge_plan(source, run, 5 / 8)  # five of eight merged: three groups
            assert plan.kept[l] == slots and plan.expert_map[l] == groups
            for e in range(8):
                want = e if e in top else top[int(np.argmax([sim[e, d] for d in top]))]
                assert slots[groups[e]] == want  # (a tie in similarity would go to the more frequent: none here)
        # the router logits are the engine's own (its f32 router on the hidden state it recorded)
        rec = run.model.route(IDS[:32], 32, with_hidden=True)
        for l in moe_layers(source.cfg):
            ref_e, _, decidable = route(run.model.container, rec.hidden[:, l], l)
            z = source.router_logits(l, rec.hidden[:, l])
            mine = np.sort(np.argsort(-z, axis=1, kind="stable")[:, :2], axis=1)
            assert decidable.mean() > 0.9 and (mine[decidable] == ref_e[decidable]).all()


def _expert(rng, H=16, I=24):
    return {"gate": rng.normal(size=(I, H)).astype(np.float32), "up": rng.normal(size=(I, H)).astype(np.float32),
            "down": rng.normal(size=(H, I)).astype(np.float32)}


def _run(w, x):
    g = x @ w["gate"].T
    return (g / (1 + np.exp(-g)) * (x @ w["up"].T)) @ w["down"].T


def test_a_permuted_copy_merges_exactly():
    rng = np.random.default_rng(0)
    a = _expert(rng)
    perm = rng.permutation(24)
    b = {"gate": a["gate"][perm], "up": a["up"][perm], "down": a["down"][:, perm]}
    x = rng.normal(size=(5, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(b, x), _run(a, x), rtol=0, atol=1e-4)  # the same function (outputs ~1e2)
    aligned = align(a, b)
    for k in a:
        assert np.array_equal(aligned[k], a[k])
    merged = merge_group({3: a, 5: b}, 3, np.array([0, 0, 0, 0.3, 0, 0.7]))
    for k in a:
        assert np.array_equal(merged[k], a[k])


def test_merge_is_the_frequency_weighted_mean_of_aligned_members():
    rng = np.random.default_rng(1)
    members = {0: _expert(rng), 2: _expert(rng), 5: _expert(rng)}
    freq = np.array([0.5, 0, 0.2, 0, 0, 0.1])
    merged = merge_group(members, 0, freq)
    aligned = {e: (w if e == 0 else align(members[0], w)) for e, w in members.items()}
    for k in ("gate", "up", "down"):
        want = sum(freq[e] * aligned[e][k].astype(np.float64) for e in members) / freq[[0, 2, 5]].sum()
        np.testing.assert_allclose(merged[k], want, rtol=0, atol=1e-6)
        assert not np.allclose(merged[k], sum(freq[e] * members[e][k] for e in members) / 0.8, atol=1e-3)


def test_masks_and_prediction_on_a_merged_model(tmp_path):
    merged = tmp_path / "m.emoe"
    plan = _merge(FIXTURES / "qwen3_moe", merged, 0.5, bits="8")
    with pytest.warns(UserWarning, match="LOSSY"):
        model = edgemoe.load(str(merged), threads=2, predictor="gate", prefetch_min_confidence=0.0,
                             disable_experts=[(0, 1), (1, 2)])
    with model.record_routing() as record:
        model.generate(IDS[:8], max_tokens=6, temperature=0)
    assert not (record.experts[:, 0] == 1).any() and not (record.experts[:, 1] == 2).any()
    guessed = {(int(l), int(e)) for _, l, e in record.predicted}
    assert guessed and all(0 <= e < 4 for _, e in guessed) and (1, 2) not in guessed
    info = edgemoe.load(str(merged)).info()
    assert info["expert_reduction"]["method"] == "mc-smoe"
    assert open_container(str(merged)).manifest["expert_reduction"]["groups"][0] == plan.expert_map[0]


def test_widths_and_cli(tmp_path, capsys):
    reduced_at_widths(tmp_path, "--merge-experts")
    assert main(["info", str(tmp_path / "auto.emoe")]) == 0
    assert "8 routed experts per layer merged into 4" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--merge-experts", "0.05"], "merges no expert of 8"),
    (["--merge-experts", "1"], "between 0 and 1"),
    (["--merge-experts", "0.5", "--prune-experts", "0.5"], "do not combine"),
    (["--merge-experts", "0.5", "--no-calib"], "needs --calib"),
])
def test_bad_merge_requests(tmp_path, capsys, args, message):
    calib = tmp_path / "calib.txt"
    calib.write_text(CALIB)
    extra = [] if "--no-calib" in args else ["--calib", str(calib)]
    out = tmp_path / "o.emoe"
    assert main(["convert", str(FIXTURES / "qwen3_moe"), "-o", str(out), *[a for a in args if a != "--no-calib"],
                 *extra, "-q"]) != 0
    assert message in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(expert_map=c["expert_map"][:-1]), "expert_map must hold n_layers x router_experts"),
    (lambda c: c["expert_map"].__setitem__(3, 4), "expert_map of layer 0 must name experts 0-3"),
    (lambda c: c["expert_map"].__setitem__(3, -1), "expert_map of layer 0 must name experts 0-3"),
    (lambda c: c.update(expert_map=[0] * 16), "leaves an expert no router output reaches"),
    (lambda c: c.update(router_experts=3), "router_experts is less than n_experts"),
    (lambda c: c.update(router_experts=0), "expert_map is given without router_experts"),
])
def test_bad_expert_maps_are_refused(tmp_path, edit, message):
    merged = tmp_path / "m.emoe"
    _merge(FIXTURES / "qwen3_moe", merged, 0.5, bits="8")
    assert_config_edit_refused(merged, edit, message)


@pytest.mark.parametrize("name", ["qwen3_moe", "gpt_oss", "gemma4"])
def test_merged_model_computes_as_the_same_experts_unshared(name, tmp_path):
    """The merged container against one where every router output has its own copy of its group's
    merged expert (and, for gpt-oss, of its merged biases; no expert_map, no folding): the same
    function, up to the rounding of computing a folded pair once with summed weights."""
    src = FIXTURES / name
    merged, unshared = tmp_path / "m.emoe", tmp_path / "u.emoe"
    plan = _merge(src, merged, 0.5)
    source = source_experts(str(src))
    E = source.cfg["n_experts"]
    copies = ExpertPlan(
        {l: list(range(E)) for l in plan.kept}, {}, None,
        {(l, e): (lambda l=l, e=e: plan.read(source.read, l, plan.expert_map[l][e])) for l in plan.kept for e in range(E)},
        {name: (lambda rows, merge=merge, l=int(name.split(".")[1]): merge(rows)[plan.expert_map[l]])
         for name, merge in plan.resident_merge.items()})
    assert bool(copies.resident_merge) == (name == "gpt_oss")
    convert_hf(str(src), str(unshared), bits="f32", progress=False, expert_plan=copies)
    a = edgemoe.load(str(merged), threads=2, kv_cache="f32")
    b = edgemoe.load(str(unshared), threads=2, kv_cache="f32")
    assert b.config["n_experts"] == E and not b.config["router_experts"]
    for start in (0, 48):
        got, want = a.logits(IDS[start:start + 48]), b.logits(IDS[start:start + 48])
        # measured: 1.7e-6 (qwen3_moe), 3.3e-6 (gpt-oss), 6.8e-5 (gemma4, whose random fixture magnifies any
        # rounding ~300x more: an f16 KV cache moves its logits by 2.0 against qwen3_moe's 0.006); a stale folded row: 1.2
        assert np.abs(got - want).max() < (7e-4 if name == "gemma4" else 2e-5)


def test_merged_biases_are_the_weighted_mean_of_aligned_rows(tmp_path):
    """gpt-oss: a merged slot's gate and up biases follow its members' neuron permutations."""
    from edgemoe.offline.expert_merge import GroupMerge

    rng = np.random.default_rng(2)
    a = _expert(rng)
    perm = rng.permutation(24)
    b = {"gate": a["gate"][perm], "up": a["up"][perm], "down": a["down"][:, perm]}
    bias = rng.normal(size=(2, 24)).astype(np.float32)
    bias[1] = bias[0][perm]  # expert 1's gate bias: expert 0's, permuted with its neurons
    group = GroupMerge({0: a, 1: b}.__getitem__, 0, [0, 1], np.array([0.6, 0.4]))
    assert np.array_equal(group.bias(bias, True), bias[0])
    down = rng.normal(size=(2, 16)).astype(np.float32)
    np.testing.assert_allclose(group.bias(down, False), 0.6 * down[0] + 0.4 * down[1], rtol=0, atol=1e-6)


def test_merged_model_with_the_stats_predictor(tmp_path):
    """Folded choices (-1) reach the predictors: the stats predictor must skip them."""
    from edgemoe.offline.profile import profile_container

    merged = tmp_path / "m.emoe"
    _merge(FIXTURES / "qwen3_moe", merged, 0.5, bits="8")
    profile_container(str(merged), CALIB)
    model = edgemoe.load(str(merged), threads=2, predictor="stats", prefetch_min_confidence=0.0)
    with model.record_routing() as record:
        model.generate(IDS[:8], max_tokens=30, temperature=0)
    assert (record.experts == -1).any(), "no folded choice while decoding: the test would prove nothing"
    assert len(record.predicted) > 0


def test_masks_on_a_merged_grouped_model_count_router_outputs(tmp_path):
    """DeepSeek-V2's groups are of router outputs: masking a merged expert masks every output reaching
    it, and the group rules count those outputs (here, rule by rule, in Python)."""
    src = fixture_folder(tmp_path, "deepseek_v2_groups", topk_group=3)
    merged = tmp_path / "m.emoe"
    plan = _merge(src, merged, 0.5, bits="8")
    cfg = open_container(str(merged)).config
    G, per, K = cfg["n_group"], cfg["router_experts"] // cfg["n_group"], cfg["top_k"]
    outcomes = set()
    for masked in [(e,) for e in range(cfg["n_experts"])] + list(itertools.combinations(range(cfg["n_experts"]), 2)):
        off = [plan.expert_map[0][j] in masked for j in range(cfg["router_experts"])]
        open_per_group = sorted(per - sum(off[g * per:(g + 1) * per]) for g in range(G))
        valid = sum(open_per_group[:cfg["topk_group"]]) >= K and cfg["router_experts"] - sum(off) >= K
        outcomes.add(valid)
        pairs = [(0, e) for e in masked]
        if valid:
            with pytest.warns(UserWarning, match="LOSSY"):
                model = edgemoe.load(str(merged), threads=2, disable_experts=pairs)
            assert not np.isin(model.route(IDS[:48], 48).experts[:, 0], masked).any()
        else:
            with pytest.raises(ValueError, match="router outputs"):
                edgemoe.load(str(merged), disable_experts=pairs)
    assert outcomes == {True, False}, "both an allowed and a refused mask should occur on this fixture"


@pytest.mark.parametrize("name", ["qwen3_moe", "gpt_oss", "gemma4", "qwen3_5_moe"])
def test_replayed_router_logits_choose_as_the_engine(name, tmp_path):
    """The grouping's router logits (numpy, from the checkpoint: Gemma 4's own router norm, gpt-oss's
    bias, Qwen3.5's 1 + w norms) pick the experts the engine picked on the hidden state it recorded."""
    src = str(FIXTURES / name)
    source = source_experts(src)
    path = str(tmp_path / "m.emoe")
    convert_hf(src, path, bits="f32", progress=False)
    model = edgemoe.load(path, kv_cache="f32")
    record = model.route(IDS[:48], 48, with_hidden=True)
    K = source.cfg["top_k"]
    for l in moe_layers(source.cfg):
        z = source.router_logits(l, record.hidden[:, l])
        ranked = np.sort(z, axis=1)[:, ::-1]
        decidable = ranked[:, K - 1] - ranked[:, K] > 1e-4
        mine = np.sort(np.argsort(-z, axis=1, kind="stable")[:, :K], axis=1)
        assert decidable.mean() > 0.9
        assert (mine[decidable] == np.sort(record.experts[:, l], axis=1)[decidable]).all()


def test_without_scipy_merging_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "scipy.optimize", None)  # an import of it now fails
    rng = np.random.default_rng(3)
    with pytest.raises(edgemoe.EdgeMoEError, match=r"pip install 'edgemoe\[reduce\]'"):
        align(_expert(rng), _expert(rng))
