"""Merged experts with low-rank corrections (`edgemoe convert --merge-experts F --low-rank R`;
edgemoe/offline/expert_merge.py, csrc/model/low_rank.h): every member of a merged group computes the
merged expert plus its own rank-R correction (the truncated SVD of its aligned difference from the
merged expert), so members that differ from each other by little rank come back exactly; the engine
computes what the corrected experts, stored whole, compute; bad ranks and bad correction maps are refused."""
from __future__ import annotations


import numpy as np
import pytest

import edgemoe
from edgemoe.apps.cli import main
from edgemoe.convert import convert_hf
from edgemoe.convert.expert_plan import ExpertPlan
from edgemoe.format.container import open_container
from edgemoe.offline.calibration import source_experts
from edgemoe.offline.expert_merge import GroupMerge, low_rank_factors, plan_merging

from conftest import FIXTURES, decode_logits, fixture_folder, small_batch_engine
from container_edit import assert_config_edit_refused
from reduction_cli import CALIB

IDS = np.random.default_rng(44).integers(0, 384, 64).tolist()


def _merge(src, out, fraction, rank, bits="f32"):
    plan = plan_merging(str(src), lambda path: convert_hf(str(src), path, bits="8", progress=False), CALIB, fraction,
                        low_rank=rank)
    convert_hf(str(src), str(out), bits=bits, progress=False, expert_plan=plan)
    return plan


def _low_rank_family(rng, E, H, I, scale=0.05):
    """E experts that are one expert plus a rank-1 difference each, their neurons shuffled."""
    base = {"gate": rng.normal(size=(I, H)), "up": rng.normal(size=(I, H)), "down": rng.normal(size=(H, I))}
    out = []
    for _ in range(E):
        w = {k: v + scale * np.outer(rng.normal(size=v.shape[0]), rng.normal(size=v.shape[1])) for k, v in base.items()}
        perm = rng.permutation(I)
        out.append({"gate": w["gate"][perm], "up": w["up"][perm], "down": w["down"][:, perm]})
    return [{k: v.astype(np.float32) for k, v in w.items()} for w in out]


def test_corrections_restore_members_of_low_rank_difference():
    """Three members, each the same expert plus a rank-1 difference (neurons shuffled): after
    alignment each differs from the merge by rank <= 3, so rank-3 corrections restore every member
    (measured 2.4e-7 on values ~1), and rank-1 ones do not (0.12)."""
    members = _low_rank_family(np.random.default_rng(3), 3, 16, 24)
    group = GroupMerge(members.__getitem__, 0, [0, 1, 2], np.array([0.5, 0.3, 0.2]))
    merged = group.weights()
    for rank, exact in ((3, True), (1, False)):
        for e, factors in group.corrections(rank).items():
            aligned = group.aligned(e)
            for k, (a, b) in factors.items():
                assert a.shape == (aligned[k].shape[0], rank) and b.shape == (rank, aligned[k].shape[1])
                err = np.abs(merged[k] + a @ b - aligned[k]).max()
                assert (err < 2.4e-6) == exact, (rank, e, k, err)


@pytest.mark.parametrize("shape, rank", [((12, 9), 2), ((96, 200), 4), ((200, 96), 16)])
def test_low_rank_factors_approach_the_truncated_svd(shape, rank):
    """The randomized SVD: exact below rank R + oversampling, and on a Gaussian matrix (a flat
    spectrum, its hardest case) within 1 % of the best rank-R error (measured at most 0.2 %; a
    range finder without power iterations: 1.8 and 7.3 %); the small matrix takes the full SVD."""
    rng = np.random.default_rng(4)
    m = rng.normal(size=shape)
    a, b = low_rank_factors(m, rank)
    assert a.shape == (shape[0], rank) and b.shape == (rank, shape[1])
    s = np.linalg.svd(m, compute_uv=False)
    assert np.linalg.norm(m - a.astype(np.float64) @ b) < 1.01 * np.sqrt((s[rank:] ** 2).sum())
    exact = rng.normal(size=(shape[0], rank + 3)) @ rng.normal(size=(rank + 3, shape[1]))
    a, b = low_rank_factors(exact, rank + 3)
    assert np.abs(a.astype(np.float64) @ b - exact).max() < 6e-7 * np.abs(exact).max()  # measured 6.0e-8: f32 factors


def _family_checkpoint(tmp_path):
    """The qwen3_moe fixture with each layer's experts rewritten as a low-rank family."""
    from safetensors.numpy import load_file, save_file

    src = fixture_folder(tmp_path, "qwen3_moe")
    tensors = load_file(str(src / "model.safetensors"))
    rng = np.random.default_rng(5)
    for l in range(2):
        for e, w in enumerate(_low_rank_family(rng, 8, 64, 32, scale=0.1)):
            for part, x in w.items():
                name = f"model.layers.{l}.mlp.experts.{e}.{part}_proj.weight"
                assert tensors[name].shape == x.shape
                tensors[name] = np.ascontiguousarray(0.2 * x)  # the fixture's scale (save_file writes the buffer as is)
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    return src


def test_low_rank_merge_of_a_low_rank_family_is_the_original_model(tmp_path):
    """Experts that differ by rank 1 each: a group of g members differs from its merge by rank <= g
    (<= 5 here), so merging half of them with rank-5 corrections computes the original model
    (measured 2.9e-6 in a prefill batch, 1.7e-6 in decode, on logits ~3), where merging alone moves
    it by 1.2 and rank-1 corrections by 0.7. Folding two members' choices as one, or leaving a
    correction out in decode, moved it by 0.4-0.6."""
    src = _family_checkpoint(tmp_path)
    convert_hf(str(src), str(tmp_path / "o.emoe"), bits="f32", progress=False)
    _merge(src, tmp_path / "m.emoe", 0.5, None)
    plan = _merge(src, tmp_path / "r.emoe", 0.5, 5)
    assert max(np.bincount(plan.expert_map[l]).max() for l in plan.kept) <= 5
    original = edgemoe.load(str(tmp_path / "o.emoe"), threads=2, kv_cache="f32")
    want = original.logits(IDS)
    merged_only = edgemoe.load(str(tmp_path / "m.emoe"), threads=2, kv_cache="f32").logits(IDS)
    assert np.abs(merged_only - want).max() > 0.3
    corrected = edgemoe.load(str(tmp_path / "r.emoe"), threads=2, kv_cache="f32")
    assert corrected.config["low_rank"] == 5
    assert np.abs(corrected.logits(IDS) - want).max() < 2.9e-5
    assert np.abs(decode_logits(corrected, IDS[:24]) - want[:24]).max() < 2.9e-5


@pytest.mark.parametrize("name, bits", [("qwen3_moe", "f32"), ("gemma4", "f32"), ("qwen3_moe", "f16")])
def test_low_rank_model_computes_as_its_corrected_experts_stored_whole(name, bits, tmp_path):
    """The merged container with rank-3 corrections against one where every router output has its
    own expert, merged + A B from the plan's factors (no expert_map): the same function, in a
    prefill batch, in decode (cached experts run batched, corrections per entry) and in batches of
    1 and 2 tokens. Measured: 2.4e-6 (qwen3_moe), 2.0e-5 (gemma4, whose fixture magnifies rounding
    ~300x); with f16 weights and factors (rounded apart, where the reference rounds W + A B)
    2.5e-3. Leaving out decode's down correction moved them by 1.7 and 7.5."""
    src = FIXTURES / name
    plan = _merge(src, tmp_path / "r.emoe", 0.5, 3, bits=bits)
    source = source_experts(str(src))
    E, R = source.cfg["n_experts"], 3
    factors = {l: plan.corrections[l]() for l in plan.kept}

    def corrected(l, e):
        w = dict(plan.read(source.read, l, plan.expert_map[l][e]))
        d = plan.expert_delta[l][e]
        if d >= 0:
            for part, x in w.items():
                rows = x.shape[0]
                a = factors[l][f"{part}_a"][d * rows:(d + 1) * rows]
                b = factors[l][f"{part}_b"][d * R:(d + 1) * R]
                w[part] = (np.asarray(x, np.float64) + a.astype(np.float64) @ b).astype(np.float32)
        return w

    whole = ExpertPlan({l: list(range(E)) for l in plan.kept}, {}, None,
                       {(l, e): (lambda l=l, e=e: corrected(l, e)) for l in plan.kept for e in range(E)})
    convert_hf(str(src), str(tmp_path / "w.emoe"), bits=bits, progress=False, expert_plan=whole)
    a = edgemoe.load(str(tmp_path / "r.emoe"), threads=2, kv_cache="f32")
    b = edgemoe.load(str(tmp_path / "w.emoe"), threads=2, kv_cache="f32")
    assert a.config["n_experts"] == E // 2 and b.config["n_experts"] == E
    assert {t["type"] for n, t in open_container(str(tmp_path / "r.emoe")).tensors.items() if ".delta_" in n} == {bits}
    bound = 2.5e-2 if bits == "f16" else 2e-4 if name == "gemma4" else 2.4e-5
    want = b.logits(IDS)
    assert np.abs(a.logits(IDS) - want).max() < bound
    assert np.abs(decode_logits(a, IDS[:24]) - want[:24]).max() < bound
    # Batches of 1 and 2 tokens: a token choosing two members of one group gives their expert more
    # users than the batch has tokens (it overran the scratch buffers once) and, in decode, two
    # entries for one expert, which the routing below shows happen.
    for max_batch in (1, 2):
        engine, vocab = small_batch_engine(tmp_path / "r.emoe", max_batch)
        assert np.abs(np.asarray(engine.logits(IDS, vocab)) - want).max() < bound
    choices = a.route(IDS, 64).experts  # [token, layer, rank]: the experts reached
    users = [np.bincount(c[c >= 0]).max() for t in range(0, len(IDS), 2) for c in choices[t:t + 2].transpose(1, 0, 2)
             if (c >= 0).any()]
    assert max(users) > 2


def test_low_rank_factors_are_stored_at_the_resident_width(tmp_path, capsys):
    """8-bit residents: the factors are f16 (any rank is a row length f16 holds); the manifest and
    `edgemoe info` name the rank."""
    plan = _merge(FIXTURES / "qwen3_moe", tmp_path / "r8.emoe", 0.5, 3, bits="8")
    assert main(["info", str(tmp_path / "r8.emoe")]) == 0
    assert "merged into 4, each merged member with a rank-3 correction" in capsys.readouterr().out
    c = open_container(str(tmp_path / "r8.emoe"))
    types = {name: t["type"] for name, t in c.tensors.items() if ".delta_" in name}
    assert len(types) == 12 and set(types.values()) == {"f16"}
    assert c.manifest["expert_reduction"]["low_rank"] == 3
    n = sum(d >= 0 for d in plan.expert_delta[0])
    assert tuple(c.tensors["layers.0.delta_gate_a"]["shape"]) == (n * 32, 3)
    assert tuple(c.tensors["layers.0.delta_down_b"]["shape"]) == (n * 3, 32)


def test_with_bits_auto_and_from_a_gguf(tmp_path):
    """--low-rank with --bits auto (widths chosen over the merged experts) and from llama.cpp's file."""
    calib = tmp_path / "calib.txt"
    calib.write_text(CALIB)
    auto, gguf = tmp_path / "auto.emoe", tmp_path / "gguf.emoe"
    assert main(["convert", str(FIXTURES / "qwen3_moe"), "-o", str(auto), "--bits", "auto", "--target-size", "40KB",
                 "--merge-experts", "0.5", "--low-rank", "2", "--calib", str(calib), "-q"]) == 0
    assert main(["convert", str(FIXTURES / "gguf" / "qwen3_moe-q8_0.gguf"), "-o", str(gguf), "--bits", "4",
                 "--merge-experts", "0.5", "--low-rank", "2", "--calib", str(calib), "-q"]) == 0
    for path in (auto, gguf):
        c = open_container(str(path))
        assert c.config["low_rank"] == 2 and c.config["n_experts"] == 4
        assert np.isfinite(edgemoe.load(str(path), threads=2).logits(IDS[:16])).all()
    assert open_container(str(auto)).manifest["quantization"]["experts"] == "mixed"


@pytest.mark.parametrize("args, message", [
    (["--merge-experts", "0.5", "--low-rank", "0"], "rank of at least 1"),
    (["--merge-experts", "0.5", "--low-rank", "22"], "--low-rank 22 saves nothing"),
    (["--prune-experts", "0.5", "--low-rank", "2"], "it needs --merge-experts"),
    (["--low-rank", "2"], "it needs --merge-experts"),
])
def test_bad_ranks(tmp_path, capsys, args, message):
    calib = tmp_path / "calib.txt"
    calib.write_text(CALIB)
    out = tmp_path / "o.emoe"
    assert main(["convert", str(FIXTURES / "qwen3_moe"), "-o", str(out), *args, "--calib", str(calib), "-q"]) != 0
    assert message in capsys.readouterr().err and not out.exists()


def test_low_rank_refuses_per_expert_biases(tmp_path, capsys):
    calib = tmp_path / "calib.txt"
    calib.write_text(CALIB)
    out = tmp_path / "o.emoe"
    assert main(["convert", str(FIXTURES / "gpt_oss"), "-o", str(out), "--merge-experts", "0.5", "--low-rank", "2",
                 "--calib", str(calib), "-q"]) != 0
    assert "per-expert biases" in capsys.readouterr().err and not out.exists()


def _name_twice(delta):
    """Layer 0's second correction named by its first output as well (a repeat, in range)."""
    first, second = [j for j, d in enumerate(delta[:8]) if d >= 0][:2]
    delta[second] = delta[first]


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(expert_delta=c["expert_delta"][:-1]), "expert_delta must hold n_layers x router_experts"),
    (lambda c: _name_twice(c["expert_delta"]), "must name each of its corrections"),
    (lambda c: c["expert_delta"].__setitem__(0, 99), "must name each of its corrections"),
    (lambda c: c.update(low_rank=0), "expert_delta is given without low_rank"),
    (lambda c: c.update(expert_delta=[-1] * 8 + c["expert_delta"][8:]), "expert_delta of layer 0 names no correction"),
    (lambda c: c.update(low_rank=4), "delta_gate_a has shape"),
    (lambda c: c.update(low_rank=40), "low_rank must be less than hidden and expert_intermediate"),
])
def test_bad_correction_maps_are_refused(tmp_path, edit, message):
    merged = tmp_path / "r.emoe"
    _merge(FIXTURES / "qwen3_moe", merged, 0.5, 3, bits="8")
    assert_config_edit_refused(merged, edit, message)
