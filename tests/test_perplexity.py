"""edgemoe perplexity: sliding windows score every token once, against a brute-force reference."""
import json
import math

import numpy as np
import pytest

import edgemoe
from edgemoe.apps.cli import main
from edgemoe.offline.perplexity import perplexity

V = 7


class PeekingModel:
    """logits(window): row i favours the true next token window[i + 1] by its context length i + 1,
    so a token's NLL tells how much context the window that scored it gave."""

    def __init__(self):
        self.windows = []

    def logits(self, window):
        self.windows.append(list(window))
        out = np.zeros((len(window), V), dtype=np.float32)
        for i in range(len(window) - 1):
            out[i, window[i + 1]] = i + 1
        return out


def reference_nll(n, ctx, stride):
    """Windows end at ctx, ctx + s, ctx + 2s, ... (s = min(stride, ctx - 1), the last at n) and
    hold the ctx tokens before their end; token p is scored by the first window ending after it,
    with context p - (that window's start)."""
    s = min(stride, ctx - 1)
    total = 0.0
    for p in range(1, n):
        end = min(n, ctx if p < ctx else ctx + ((p - ctx) // s + 1) * s)
        c = p - max(0, end - ctx)
        total += math.log(V - 1 + math.exp(c)) - c
    return total / (n - 1)


@pytest.mark.parametrize("n,ctx,stride", [(50, 8, 8), (50, 8, 7), (50, 8, 3), (50, 8, 1), (9, 8, 4), (2, 8, 8),
                                          (37, 5, 2), (8, 8, 3), (100, 2, 5)])
def test_every_token_scored_once_with_its_context(n, ctx, stride):
    ids = np.random.default_rng(n).integers(0, V, n).tolist()
    r = perplexity(PeekingModel(), ids, ctx, stride)
    assert r["tokens"] == n - 1
    assert r["nll"] == pytest.approx(reference_nll(n, ctx, stride), rel=1e-9)


def test_uniform_model_has_perplexity_of_its_vocabulary():
    class Uniform:
        def logits(self, window):
            return np.zeros((len(window), V), dtype=np.float32)

    assert perplexity(Uniform(), list(range(V)) * 5, 6, 2)["perplexity"] == pytest.approx(V)


def test_bad_windows_are_refused():
    with pytest.raises(ValueError):
        perplexity(PeekingModel(), [1, 2, 3], 1)
    with pytest.raises(ValueError):
        perplexity(PeekingModel(), [1], 4)


def test_cli_on_the_demo_model_matches_the_api(tmp_path, capsys):
    text = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
            "must be in want of a wife. ") * 8
    path = tmp_path / "t.txt"
    path.write_text(text)
    assert main(["perplexity", str(path), "--window", "64", "--stride", "32", "--json", "--threads", "1"]) == 0
    got = json.loads(capsys.readouterr().out)
    model = edgemoe.load(edgemoe.default_model_path(), threads=1)
    want = perplexity(model, model.tokenize(text, add_special_tokens=False), 64, 32)
    assert got["tokens"] == want["tokens"] and got["perplexity"] == pytest.approx(want["perplexity"], rel=1e-6)
    # repeated text is easy: the trained model must do far better than chance (8192 tokens)
    assert 1.0 < got["perplexity"] < 100
    assert main(["perplexity", str(tmp_path / "missing.txt")]) == 1
