"""Expert pruning (`edgemoe convert --prune-experts F --calib TEXT`, edgemoe/offline/expert_reduce.py):
the pruned container is the original with the removed experts masked, for every kind of routing;
REAP's saliency is what its formula says; kept blobs are copied, not re-quantized; bad fractions are
refused before anything is written."""
from __future__ import annotations


import numpy as np
import pytest

import edgemoe
from edgemoe.apps.cli import main
from edgemoe.convert import convert_hf
from edgemoe.convert.gguf import convert_gguf
from edgemoe.convert.safetensors_reader import Checkpoint
from edgemoe.format.container import open_container
from edgemoe.format.model_config import moe_layers
from edgemoe.offline.calibration import calibration_run, source_experts
from edgemoe.offline.expert_reduce import plan_pruning, prune_plan, reap_saliency

from conftest import FIXTURES, fixture_folder
from reduction_cli import CALIB, reduced_at_widths
from routing_reference import by_expert, route

IDS = np.random.default_rng(42).integers(0, 384, 96).tolist()


def _prune(src, out, fraction, bits="f32", convert=convert_hf):
    plan = plan_pruning(str(src), lambda path: convert(str(src), path, bits="8", progress=False), CALIB, fraction,
                        progress=False)
    convert(str(src), str(out), bits=bits, progress=False, expert_plan=plan)
    return plan


# Every routing the engine has that a pruning can keep (groups need members to spare: glm4_moe's
# four-expert groups, one removed from each).
CASES = {
    "qwen3_moe": ("qwen3_moe", {}, 0.5),           # softmax, renormalised top-k
    "olmoe": ("olmoe", {}, 0.5),                   # softmax, weights not renormalised
    "qwen2_moe": ("qwen2_moe", {}, 0.25),          # softmax, not renormalised, a shared expert
    "gpt_oss": ("gpt_oss", {}, 0.5),               # top-k softmax, router bias, per-expert biases
    "deepseek_v3": ("deepseek_v3", dict(n_group=1, topk_group=1), 0.5),  # sigmoid + correction bias, scaled
    "glm4_moe_groups": ("glm4_moe", dict(n_group=2, topk_group=1), 0.25),  # sigmoid, groups by top-2 sum
}


@pytest.mark.parametrize("case", CASES)
def test_pruned_model_is_the_original_with_those_experts_masked(case, tmp_path):
    name, changes, fraction = CASES[case]
    src = fixture_folder(tmp_path, name, **changes)
    original, pruned = tmp_path / "full.emoe", tmp_path / "pruned.emoe"
    convert_hf(str(src), str(original), bits="f32", progress=False)
    plan = _prune(src, pruned, fraction)
    full = open_container(str(original))
    E, kept = full.config["n_experts"], plan.kept
    removed = [(l, e) for l in kept for e in range(E) if e not in kept[l]]
    assert len(removed) == round(E * fraction) * len(kept)

    small = edgemoe.load(str(pruned), threads=2, kv_cache="f32")
    assert small.config["n_experts"] == E - round(E * fraction)
    with pytest.warns(UserWarning, match="LOSSY"):
        masked = edgemoe.load(str(original), threads=2, kv_cache="f32", disable_experts=removed)
    got, want = small.logits(IDS[:48]), masked.logits(IDS[:48])
    assert np.abs(got - want).max() < 1e-6  # measured: 0 on every case (router rows dotted one by one; zeros add nothing)

    # The routing against the numpy router of the original with those rows gone, renumbered.
    record = small.route(IDS, 48, with_hidden=True)
    for l in moe_layers(small.config):
        got_e, got_w = by_expert(record.experts[:, l], record.weights[:, l])
        ref_e, ref_w, decidable = route(full, record.hidden[:, l], l, [e for ll, e in removed if ll == l])
        ref_e = np.searchsorted(np.asarray(kept[l]), ref_e)  # original ids -> the pruned container's slots
        assert decidable.mean() > 0.9
        np.testing.assert_array_equal(got_e[decidable], ref_e[decidable])
        np.testing.assert_allclose(got_w[decidable], ref_w[decidable], rtol=0, atol=3e-6)  # measured: 2.7e-7


def _silu(x):
    return x / (1 + np.exp(-x))


def test_saliency_is_the_router_weighted_mean_of_output_norms(tmp_path):
    """REAP's S_j against a loop over tokens written from the formula, with the fixture's own weights
    (OLMoE's: its routing weights are not renormalised, so a weight is not yet a share)."""
    src = str(FIXTURES / "olmoe")
    ckpt = Checkpoint(src)  # bf16: read through the converter's reader (tested against safetensors elsewhere)
    source = source_experts(src)
    cfg = source.cfg
    with calibration_run(lambda p: convert_hf(src, p, bits="8", progress=False), CALIB, str(tmp_path / "x")) as run:
        got = reap_saliency(source, run)
        T = len(run.ids)
        for l in moe_layers(cfg):
            norm = ckpt.get(f"model.layers.{l}.post_attention_layernorm.weight").astype(np.float64)
            sums, counts = np.zeros(cfg["n_experts"]), np.zeros(cfg["n_experts"])
            for t in range(T):
                h = run.hidden[t, l].astype(np.float64)
                x = h / np.sqrt((h ** 2).mean() + cfg["rms_norm_eps"]) * norm
                total = run.weights[t, l].sum()
                for r in range(cfg["top_k"]):
                    e = run.experts[t, l, r]
                    p = f"model.layers.{l}.mlp.experts.{e}."
                    g, u, d = (ckpt.get(p + n + ".weight").astype(np.float64) for n in ("gate_proj", "up_proj", "down_proj"))
                    f = d @ (_silu(g @ x) * (u @ x))
                    sums[e] += run.weights[t, l, r] / total * np.linalg.norm(f)
                    counts[e] += 1
            want = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
            np.testing.assert_allclose(got[l], want, rtol=5e-7, atol=0)  # measured: 4.9e-8 (f32 replay, float64 here)
    assert (got[moe_layers(cfg)] > 0).sum() > cfg["n_experts"]


def test_the_least_salient_go_and_the_manifest_says_so(tmp_path):
    src = FIXTURES / "qwen3_moe"
    out = tmp_path / "p.emoe"
    plan = _prune(src, out, 0.5)
    report = open_container(str(out)).manifest["expert_reduction"]
    assert report["method"] == "reap" and report["fraction"] == 0.5 and report["original_n_experts"] == 8
    assert report["calibration_tokens"] > 0
    assert edgemoe.load(str(out)).info()["expert_reduction"]["original_n_experts"] == 8
    for l in moe_layers(open_container(str(out)).config):
        s = np.array(report["saliency"][l])
        assert report["kept"][l] == plan.kept[l] == sorted(np.argsort(-s, kind="stable")[:4].tolist())
        assert min(s[report["kept"][l]]) >= max(np.delete(s, report["kept"][l]))
    # grouped routing: the same count from every group, the kept in order
    cfg = {"n_experts": 8, "top_k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum", "n_layers": 1,
           "dense_layers": []}
    s = np.array([[9, 8, 7, 6, 1, 2, 3, 4.0]])
    assert prune_plan(s, cfg, 0.5).kept == {0: [0, 1, 6, 7]}


def test_kept_blobs_are_copied_bit_for_bit(tmp_path):
    """gpt-oss's MXFP4 experts from the hub's layout: pruning copies the kept ones' blocks."""
    src = FIXTURES / "gpt_oss_mxfp4"
    full, pruned = tmp_path / "full.emoe", tmp_path / "pruned.emoe"
    convert_hf(str(src), str(full), bits="mxfp4", progress=False)
    plan = _prune(src, pruned, 0.5, bits="mxfp4")
    a, b = open_container(str(full)), open_container(str(pruned))

    def blob(c, l, e):
        x = c.experts[l][e]
        with open(c.path, "rb") as f:
            f.seek(c.sections["experts"]["offset"] + x["offset"])
            return f.read(x["stored"])

    for l, kept in plan.kept.items():
        for slot, e in enumerate(kept):
            assert blob(b, l, slot) == blob(a, l, e)


def test_from_a_gguf_and_with_other_widths(tmp_path):
    gguf = FIXTURES / "gguf" / "qwen3_moe-q8_0.gguf"
    out = tmp_path / "g.emoe"
    _prune(gguf, out, 0.25, bits="8", convert=convert_gguf)
    c = open_container(str(out))
    assert c.config["n_experts"] == 6 and c.manifest["expert_reduction"]["method"] == "reap"
    edgemoe.load(str(out)).logits(IDS[:8])
    # a fixed width and --bits auto over the kept experts
    _, auto = reduced_at_widths(tmp_path, "--prune-experts")
    assert auto.manifest["expert_reduction"]["method"] == "reap"


@pytest.mark.parametrize("name, changes, args, message", [
    ("qwen3_moe", {}, ["--prune-experts", "1"], "between 0 and 1"),
    ("qwen3_moe", {}, ["--prune-experts", "0.05"], "removes no expert of 8"),
    ("qwen3_moe", {}, ["--prune-experts", "0.9"], "leaves 1 of 8 experts per layer, fewer than the 2"),
    ("glm4_moe", {}, ["--prune-experts", "0.25"], "cannot share evenly"),
    ("deepseek_v3", {}, ["--prune-experts", "0.5"], "leaves groups of 1, too few"),
    ("qwen3_moe", {}, ["--prune-experts", "0.5", "--no-calib"], "needs --calib"),
])
def test_bad_pruning_requests_are_refused_before_writing(tmp_path, capsys, name, changes, args, message):
    src = fixture_folder(tmp_path, name, **changes)
    calib = tmp_path / "calib.txt"
    calib.write_text(CALIB)
    calib_args = [] if "--no-calib" in args else ["--calib", str(calib)]
    args = [a for a in args if a != "--no-calib"]
    out = tmp_path / "out.emoe"
    assert main(["convert", str(src), "-o", str(out), *args, *calib_args, "-q"]) != 0
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_container_source_is_refused_with_what_to_use(tmp_path, capsys, converted):
    calib = tmp_path / "calib.txt"
    calib.write_text(CALIB)
    out = tmp_path / "o.emoe"
    for flag in ("--prune-experts", "--merge-experts"):
        assert main(["convert", converted("qwen3_moe", "8"), "-o", str(out), flag, "0.5", "--calib", str(calib),
                     "-q"]) != 0
        assert f"{flag} needs the original checkpoint (a Hugging Face folder or a GGUF file)" in capsys.readouterr().err
        assert not out.exists()
