"""edgemoe profile: routing statistics stored in the container, and the predictors that use them."""
import shutil

import numpy as np
import pytest

import edgemoe
from edgemoe.format.container import open_container
from edgemoe.offline.profile import profile_container
from edgemoe.format.profile_record import profile_arrays
from conftest import reference

CALIB = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
         "must be in want of a wife. However little known the feelings or views of such a man may be "
         "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
         "surrounding families, that he is considered the rightful property of some one or other of "
         "their daughters. ") * 3


@pytest.fixture()
def profiled(converted, tmp_path):
    path = tmp_path / "p.emoe"
    shutil.copyfile(converted("mixtral_smooth", "8"), path)
    summary = profile_container(str(path), CALIB, window=64, source="calib.txt")
    return str(path), summary


def test_profile_is_stored_and_consistent(profiled):
    path, summary = profiled
    c = open_container(path)  # still a valid container after the in-place manifest update
    p = c.manifest["profile"]
    assert p["tokens"] == summary["tokens"] > 100 and p["source"] == "calib.txt"
    freq, next_layer, tokens, _ = profile_arrays(c.manifest, c.config)
    top_k = c.config["top_k"]
    # each token picks top_k per layer (float32 shares summed: measured 9.5e-7 and 1.0e-5 off)
    np.testing.assert_allclose(freq.sum(axis=1), top_k, atol=1e-5)
    seen = next_layer.sum(axis=2) > 0
    np.testing.assert_allclose(next_layer.sum(axis=2)[seen], top_k, atol=1e-4)
    model = edgemoe.load(path)
    ids = model.tokenize(CALIB, add_special_tokens=False)
    assert (tokens[ids[0]] >= 0).all()
    unseen = sorted(set(range(c.config["vocab"])) - set(ids))[0]
    assert (tokens[unseen] == -1).all()
    assert model.info()["profile"] == {"source": "calib.txt", "tokens": summary["tokens"]}


def test_profiled_predictors_prefetch_and_keep_results(profiled):
    path, _ = profiled
    ids = reference("mixtral_smooth")["input_ids"].tolist()
    base = edgemoe.load(path, predictor="none", cache_experts=4)
    expected = np.stack([base.eval([t]) for t in ids])
    for predictor in ("stats", "token", "auto"):
        for policy in ("lru", "edgemoe"):
            model = edgemoe.load(path, predictor=predictor, cache_policy=policy, cache_experts=4,
                                 prefetch_depth=2, prefetch_min_confidence=0.0)
            np.testing.assert_array_equal(np.stack([model.eval([t]) for t in ids]), expected)
            assert model.stats()["prefetch_issued"] > 0, predictor


def test_stats_predictor_needs_a_profile(converted):
    with pytest.raises(ValueError, match="edgemoe profile"):
        edgemoe.load(converted("mixtral_smooth", "8"), predictor="stats")


def test_profile_command(converted, tmp_path):
    from edgemoe.apps.cli import main

    path = tmp_path / "c.emoe"
    shutil.copyfile(converted("qwen3_moe", "8"), path)
    calib = tmp_path / "calib.txt"
    calib.write_text(CALIB)
    assert main(["profile", str(path), "--calib", str(calib)]) == 0
    assert open_container(path).manifest["profile"]["source"] == "calib.txt"
    assert main(["profile", str(path), "--calib", str(tmp_path / "missing.txt")]) == 1


def test_min_confidence_gates_prefetch_without_changing_results(profiled):
    path, _ = profiled
    c = open_container(path)
    _, _, tokens, shares = profile_arrays(c.manifest, c.config)
    assert ((shares > 0) == (tokens >= 0)).all() and shares.max() <= 1.0
    ids = reference("mixtral_smooth")["input_ids"].tolist()
    guesses, outputs = {}, {}
    for predictor in ("gate", "stats", "token", "auto"):
        for conf in (0.0, 0.6, 1.0):
            model = edgemoe.load(path, predictor=predictor, cache_experts=4, prefetch_depth=2,
                                 prefetch_min_confidence=conf)
            with model.record_routing() as record:  # it lists every guess, whatever the cache held
                outputs[predictor, conf] = np.stack([model.eval([t]) for t in ids])
            predicted = record.predicted.reshape(-1)
            guesses[predictor, conf] = len(predicted) // 3
        # a stricter gate guesses less, and never changes a logit
        assert guesses[predictor, 0.0] > guesses[predictor, 0.6] >= guesses[predictor, 1.0], (predictor, guesses)
        for conf in (0.6, 1.0):
            np.testing.assert_array_equal(outputs[predictor, conf], outputs[predictor, 0.0])
    with pytest.raises(ValueError, match="prefetch_min_confidence"):
        edgemoe.load(path, prefetch_min_confidence=1.5)


def test_profile_without_token_shares_still_loads(profiled, tmp_path):
    # containers profiled before token shares were stored: every token expert counts as certain
    c = open_container(profiled[0])
    manifest = dict(c.manifest, profile={k: v for k, v in c.manifest["profile"].items() if k != "token_shares"})
    _, _, tokens, shares = profile_arrays(manifest, c.config)
    assert ((shares == 1.0) == (tokens >= 0)).all()


@pytest.mark.parametrize("width_change", [-1, +1])
def test_the_runtime_checks_the_profile_width_without_python(profiled, width_change):
    # The stats predictor reads `width` chosen experts per token and layer; a profile recorded
    # for another top-k, handed to the C++ engine directly, read past them (found in review).
    from edgemoe import _core

    c = open_container(profiled[0])
    freq, nxt, tok, shares = profile_arrays(c.manifest, c.config)
    k = tok.shape[2] + width_change
    tok = np.ascontiguousarray(np.pad(tok, ((0, 0), (0, 0), (0, 1)), constant_values=-1)[:, :, :k])
    shares = np.ones(tok.shape, np.float32)
    with pytest.raises(edgemoe.FormatError, match="routing profile does not match"):
        _core.Engine(c.native, {"expert_slots": 4, "threads": 1, "ctx_size": 64, "max_batch": 8, "cache_policy": "lru",
                      "predictor": "stats", "prefetch_min_confidence": 0.0}, (freq, nxt, tok, shares))


def test_a_version_1_profile_still_loads(profiled):
    """Version 1 kept the per-token tables as JSON lists: the same arrays come back from it."""
    c = open_container(profiled[0])
    freq, nxt, tokens, shares = profile_arrays(c.manifest, c.config)
    seen = [t for t in range(len(tokens)) if (tokens[t] >= 0).any()]
    v1 = {k: v for k, v in c.manifest["profile"].items() if k not in ("token_ids", "token_experts", "token_shares")}
    v1.update(version=1, token_experts={str(t): tokens[t].tolist() for t in seen},
              token_shares={str(t): shares[t].tolist() for t in seen})
    old = profile_arrays(dict(c.manifest, profile=v1), c.config)
    for a, b in zip(old, (freq, nxt, tokens, shares)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("table,value", [("token_shares", -0.5), ("token_shares", 2.0), ("token_experts", 99)])
def test_a_profile_with_values_out_of_range_is_refused(profiled, table, value):
    import base64

    c = open_container(profiled[0])
    p = dict(c.manifest["profile"])
    dtype = "<f2" if table == "token_shares" else "<i2"
    a = np.frombuffer(base64.b64decode(p[table]), dtype=dtype).copy()
    a[0] = value
    p[table] = base64.b64encode(a.tobytes()).decode("ascii")
    with pytest.raises(edgemoe.FormatError, match="routing profile is malformed"):
        profile_arrays(dict(c.manifest, profile=p), c.config)
