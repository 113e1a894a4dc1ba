"""`edgemoe experts`: which experts a text engages more than a baseline (edgemoe/offline/attribution.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import edgemoe
from edgemoe.apps.cli import main
from edgemoe.offline.attribution import attribute, disable_flag, engagement


def test_engagement_against_a_direct_count():
    rng = np.random.default_rng(3)
    T, L, K, E = 50, 3, 2, 6
    experts = np.stack([np.stack([rng.choice(E, K, replace=False) for _ in range(T)]) for _ in range(L)], axis=1)
    experts[:, 0] = -1  # a dense layer
    weights = rng.random((T, L, K)).astype(np.float32) * 3  # not shares: scaled as routed_scaling_factor does
    got = engagement(experts, weights, E)
    share, count = np.zeros((L, E)), np.zeros((L, E), dtype=np.int64)
    for t in range(T):
        for l in range(1, L):
            total = weights[t, l].sum()
            for r in range(K):
                share[l, experts[t, l, r]] += weights[t, l, r] / total / T
                count[l, experts[t, l, r]] += 1
    np.testing.assert_allclose(got.share, share, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(got.count, count)
    np.testing.assert_allclose(got.share[1:].sum(axis=1), 1.0, rtol=1e-6)


def test_a_text_against_itself_engages_nothing_more(converted):
    model = edgemoe.load(converted("qwen3_moe", "8"), threads=2)
    ids = np.random.default_rng(5).integers(0, 384, 120).tolist()
    record = model.route(ids, 40)
    same = engagement(record.experts, record.weights, model.config["n_experts"])
    report = attribute(same, same, model.config, min_count=1, min_lift=1.0 + 1e-9)
    assert all(not row["experts"] for row in report) and disable_flag(report) == ""


def test_one_repeated_token_engages_its_own_experts(converted):
    """Every position of a repeated token has the same hidden state in every layer (attention mixes
    identical values), so the text engages exactly that token's top-k, with its routing shares."""
    model = edgemoe.load(converted("qwen3_moe", "8"), threads=2)
    cfg = model.config
    alone = model.route([57], 1)
    record = model.route([57] * 64, 64)
    text = engagement(record.experts, record.weights, cfg["n_experts"])
    report = attribute(text, None, cfg, min_count=64, min_lift=1e-9, top=cfg["n_experts"])
    for row in report:
        l = row["layer"]
        assert sorted(x["expert"] for x in row["experts"]) == sorted(alone.experts[0, l].tolist())
        shares = alone.weights[0, l] / alone.weights[0, l].sum()
        for x in row["experts"]:
            assert x["count"] == 64
            assert x["share"] == pytest.approx(float(shares[list(alone.experts[0, l]).index(x["expert"])]), abs=1e-5)
            assert x["lift"] == pytest.approx((x["share"] + 1 / (10 * 64 * cfg["top_k"])) /
                                              (1 / cfg["n_experts"] + 1 / (10 * 64 * cfg["top_k"])))


def test_cli_report_and_its_mask(converted, tmp_path, capsys):
    path = converted("qwen3_moe", "8")
    text, base = tmp_path / "text.txt", tmp_path / "base.txt"
    text.write_text("the cat sat on the mat. " * 20)
    base.write_text("Numbers: 1 2 3 4 5 6 7 8 9 10, and letters q w e r t y. " * 10)
    assert main(["experts", path, "--text", str(text), "--baseline", str(base), "--json", "--min-lift", "1.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text_tokens"] > 0 and out["baseline_tokens"] > 0
    reported = [(row["layer"], x["expert"]) for row in out["layers"] for x in row["experts"]]
    assert reported, "a text of one sentence repeated should lean on some experts more than another text does"
    for row in out["layers"]:
        for x in row["experts"]:
            assert x["lift"] >= 1.5 and x["count"] >= 8 and x["share"] > x["baseline"]
    assert main(["experts", path, "--text", str(text), "--baseline", str(base), "--min-lift", "1.5"]) == 0
    flag = capsys.readouterr().out.strip().splitlines()[-1].split()[-1]
    with pytest.warns(UserWarning, match="LOSSY"):
        masked = edgemoe.load(path, threads=2, disable_experts=flag)
    ids = masked.tokenize(text.read_text(), add_special_tokens=False)
    record = masked.route(ids, 64)
    for layer, expert in reported:
        assert not (record.experts[:, layer] == expert).any()


def test_bad_inputs(converted, tmp_path, capsys):
    path = converted("qwen3_moe", "8")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["experts", path, "--text", str(empty)]) != 0
    assert "the text has no tokens" in capsys.readouterr().err
    assert main(["experts", path, "--text", str(tmp_path / "missing.txt")]) != 0
    assert "cannot read" in capsys.readouterr().err
