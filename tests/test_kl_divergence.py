"""`edgemoe perplexity --kl-divergence`: a conversion's per-token distributions against a
reference's, as llama.cpp reports them, from a reference container or from saved log-probabilities."""
import os

import numpy as np
import pytest

import edgemoe
from edgemoe.offline.kl_divergence import SavedLogits, kl_divergence, save_logits

TEXT = ("The fox jumps over the lazy dog while the cat sleeps in the warm sun. " * 6).strip()


def _softmax_log(x):
    x = x.astype(np.float64) - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def pair(converted):
    return (edgemoe.load(converted("qwen3_moe", "4"), threads=2),
            edgemoe.load(converted("qwen3_moe", "f32"), threads=2, kv_cache="f32"))


def test_the_figures_are_those_of_the_logits(pair):
    model, reference = pair
    ids = model.tokenize(TEXT)
    r = kl_divergence(model, reference, ids, ctx=len(ids), stride=len(ids) - 1)  # one window: rows 0 .. n-2
    q, p = _softmax_log(model.logits(ids)[:-1]), _softmax_log(reference.logits(ids)[:-1])
    kl = (np.exp(p) * (p - q)).sum(-1)  # KL(reference || model), as llama.cpp orders it
    assert r["tokens"] == len(ids) - 1
    assert r["kl_mean"] == pytest.approx(kl.mean(), rel=1e-12) and r["kl_mean"] > 0
    assert r["kl_p99"] == pytest.approx(np.percentile(kl, 99), rel=1e-12)
    assert r["kl_max"] == pytest.approx(kl.max(), rel=1e-12)
    assert r["top1_agreement"] == np.mean(p.argmax(-1) == q.argmax(-1))
    targets = np.arange(len(ids) - 1), ids[1:]
    assert r["perplexity_ratio"] == pytest.approx(np.exp((p[targets] - q[targets]).mean()), rel=1e-12)


def test_a_model_against_itself_is_zero(pair):
    model, _ = pair
    ids = model.tokenize(TEXT)
    r = kl_divergence(model, model, ids, ctx=32, stride=16)  # several windows
    assert r["kl_mean"] == 0 and r["kl_max"] == 0 and r["top1_agreement"] == 1 and r["perplexity_ratio"] == 1


def test_saved_log_probabilities_stand_in_for_the_reference(pair, tmp_path):
    model, reference = pair
    ids = model.tokenize(TEXT)
    live = kl_divergence(model, reference, ids, ctx=32, stride=16)
    path = str(tmp_path / "ref.npy")
    save_logits(reference, ids, 32, 16, path)
    saved = kl_divergence(model, SavedLogits(path, ids, 32, 16), ids, ctx=32, stride=16)
    assert saved["top1_agreement"] == live["top1_agreement"]
    # 16-bit codes of 0.0004 nats: measured 1.8e-7 off in the mean KL and 6.4e-6 in the perplexity ratio
    assert saved["kl_mean"] == pytest.approx(live["kl_mean"], abs=2e-6)
    assert saved["perplexity_ratio"] == pytest.approx(live["perplexity_ratio"], abs=5e-5)
    with pytest.raises(edgemoe.FormatError, match="same text, --max-tokens, --window and --stride"):
        SavedLogits(path, ids, 32, 8)
    with pytest.raises(edgemoe.FormatError, match="same text"):
        SavedLogits(path, ids[:-1], 32, 16)
    for meta in (b"not json", b'{"format": [1, 2]}'):  # unreadable, or not the record save_logits writes
        (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY")
        (tmp_path / "junk.npy.json").write_bytes(meta)
        with pytest.raises(edgemoe.FormatError, match="not logits saved by|format"):
            SavedLogits(str(tmp_path / "junk.npy"), ids, 32, 16)
    os.unlink(path + ".json")  # the codes without the record of what they are for
    with pytest.raises(edgemoe.FormatError, match="not logits saved by"):
        SavedLogits(path, ids, 32, 16)


def test_a_reference_of_another_vocabulary_is_refused(pair):
    model, _ = pair

    class OtherModel:  # refused on its config, before anything is evaluated
        config = {"vocab": model.config["vocab"] + 1}

    with pytest.raises(edgemoe.FormatError, match="not the same model"):
        kl_divergence(model, OtherModel(), model.tokenize(TEXT), ctx=32, stride=16)


def test_the_cli_prints_llama_cpp_s_figures(converted, tmp_path, capsys):
    from edgemoe.apps.cli import main

    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    saved = str(tmp_path / "ref.npy")
    assert main(["perplexity", converted("qwen3_moe", "f32"), str(text), "--window", "32", "--save-logits", saved]) == 0
    assert main(["perplexity", converted("qwen3_moe", "4"), str(text), "--window", "32", "--kl-divergence", saved]) == 0
    out = capsys.readouterr().out
    assert "KL divergence  mean" in out and "99th percentile" in out and "same top token" in out
    assert main(["perplexity", converted("qwen3_moe", "4"), str(text), "--window", "32", "--kl-divergence",
                 converted("qwen3_moe", "f32")]) == 0
    # the reference runs as it is: a lossy flag of this run applies to the model measured only
    assert main(["perplexity", converted("qwen3_moe", "8"), str(text), "--window", "32", "--active-experts", "1",
                 "--kl-divergence", converted("qwen3_moe", "8")]) == 0
    assert "KL divergence  mean 0.000000" not in capsys.readouterr().out
