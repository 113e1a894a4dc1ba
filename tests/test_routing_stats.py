"""bench/routing_stats.py's measures on routing whose answers are known."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from routing_stats import statistics  # noqa: E402

HEADER = {"n_layers": 3, "n_experts": 16, "top_k": 2, "dense_layers": []}


def distinct_choices(rng, tokens, E, k):
    return np.stack([rng.choice(E, k, replace=False) for _ in range(tokens)])


def test_independent_uniform_routing_is_balanced_and_uncoupled():
    rng = np.random.default_rng(0)
    experts = np.stack([distinct_choices(rng, 4000, 16, 2) for _ in range(3)], axis=1)
    s = statistics(HEADER, experts)
    assert s["balance_min"] > 0.99
    assert abs(s["reuse"] - s["reuse_independent"]) < 0.02
    assert abs(s["coupling"] - s["coupling_shuffled"]) < 0.01


def test_a_layer_that_repeats_the_last_one_shuffled_is_fully_coupled_and_a_repeated_token_reuses_all():
    rng = np.random.default_rng(1)
    first = distinct_choices(rng, 4000, 16, 2)
    perm = rng.permutation(16)
    experts = np.stack([first, perm[first], perm[perm[first]]], axis=1)
    s = statistics(HEADER, experts)
    # Over a token's 2 x 2 pairs, knowing a gives b = perm(a) half the time, else one of the other
    # 15: I / H(B) = (ln 16 - (0.5 ln 2 + 0.5 ln 30)) / ln 16 = 0.262, the most top-2 of 16 can show.
    assert abs(s["coupling"] - 0.262) < 0.01 and s["coupling_shuffled"] < 0.01
    repeated = np.repeat(experts[::2], 2, axis=0)  # every token routed as the one before it
    assert statistics(HEADER, repeated)["reuse"] > 0.49  # half the tokens repeat their predecessor


def test_dense_layers_are_left_out():
    rng = np.random.default_rng(2)
    experts = np.stack([distinct_choices(rng, 500, 16, 2), np.full((500, 2), -1),
                        distinct_choices(rng, 500, 16, 2)], axis=1)
    s = statistics(dict(HEADER, dense_layers=[1]), experts)
    assert s["layers"] == 2 and s["balance_min"] > 0.95
