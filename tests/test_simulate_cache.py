"""The cache simulator: textbook cases, and agreement with the engine's own LRU."""
import os
import sys

import pytest

import edgemoe
from edgemoe.trace import read_trace, write_trace

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import simulate_cache as sim  # noqa: E402

POLICIES = ["lru", "lfu", "edgemoe", "recent", "per-layer", "lookahead1", "lookahead3", "belady"]


def steps_of(seq):
    return [[(0, e)] for e in seq]


def run(seq, slots, name, n_layers=1):
    steps = steps_of(seq)
    return sim.simulate(steps, n_layers, slots, sim.POLICIES[name](n_layers, steps))


def test_cyclic_pattern_defeats_lru_not_belady():
    seq = [0, 1, 2, 3] * 10  # cycle one longer than the cache
    assert run(seq, 3, "lru")["hits"] == 0
    assert run(seq, 3, "belady")["hit_rate"] > 0.5


def test_lfu_keeps_the_frequent_expert():
    seq = [0, 1, 0, 2, 0, 3, 0, 4, 0, 5]
    assert run(seq, 2, "lfu")["hits"] == 4  # expert 0 stays
    assert run(seq, 2, "lfu")["hits"] >= run(seq, 2, "lru")["hits"]


def test_edgemoe_prefers_experts_of_nearer_layers():
    # two layers; equally frequent experts: the one whose layer comes next is kept
    policy = sim.EdgeMoE(n_layers=4)
    for key in [(1, 0), (3, 0)]:
        policy.on_access(key, 0)
    # computing layer 0: layer 1 is 1 layer away, layer 3 is 3 away
    assert policy.victim([(1, 0), (3, 0)], current_layer=0, step=0) == (3, 0)


def test_lookahead_keeps_what_the_next_steps_use():
    # one layer, experts 0..2 cached; the next step uses 0, the one after 1: the bound evicts 2
    steps = steps_of([5, 0, 1, 2])
    policy = sim.RouterLookahead(n_layers=1, steps=steps, horizon=2)
    for e in (2, 1, 0):  # 2 the most recent and frequent: recent alone would keep it
        policy.on_step(0, 0)
        policy.on_access((0, e), 0)
    policy.on_access((0, 2), 0)
    assert sim.Recent.victim(policy, [(0, 0), (0, 1), (0, 2)], 0, 0) != (0, 2)
    assert policy.victim([(0, 0), (0, 1), (0, 2)], current_layer=0, step=0) == (0, 2)


def test_per_layer_pool_evicts_from_its_own_layer():
    policy = sim.PerLayerRecent(n_layers=2, slots=4)  # two slots per layer
    for key in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        policy.on_access(key, 0)
    for _ in range(5):
        policy.on_access((1, 0), 0)  # layer 1's experts are worth more, yet layer 1 evicts its own
    for _ in range(3):
        policy.on_access((1, 1), 0)
    assert sim.Recent.victim(policy, [(0, 0), (0, 1), (1, 0), (1, 1)], 1, 0)[0] == 0
    assert policy.victim([(0, 0), (0, 1), (1, 0), (1, 1)], current_layer=1, step=0) == (1, 1)


@pytest.mark.parametrize("slots", [2, 3, 5, 8])
def test_belady_is_an_upper_bound(slots):
    import random

    rng = random.Random(slots)
    seq = [min(int(rng.expovariate(0.3)), 9) for _ in range(400)]
    best = run(seq, slots, "belady")["hits"]
    for name in POLICIES:
        assert run(seq, slots, name)["hits"] <= best


@pytest.mark.parametrize("policy", ["lru", "lfu", "edgemoe", "recent"])
@pytest.mark.parametrize("slots,io_threads", [(2, 4), (4, 0), (4, 4), (7, 1)])
def test_simulated_policy_matches_the_engine(converted, tmp_path, slots, policy, io_threads):
    # The engine decoding token by token with a cache of `slots` experts must
    # see exactly the hits and misses the simulator predicts from its trace,
    # whichever threads read a layer's misses.
    path = tmp_path / "t.jsonl"
    prompt = [11, 42, 7, 99, 5, 8, 200, 31]
    model = edgemoe.load(converted("olmoe", "8"), threads=1, cache_experts=slots, predictor="none",
                         cache_policy=policy, io_threads=io_threads)
    with model.record_routing() as record:
        for t in prompt:
            model.eval([t])
    pos, experts, weights = record.positions, record.experts, record.weights
    write_trace(str(path), {"n_layers": 3, "n_experts": 8, "top_k": 2}, prompt, pos, experts, weights)
    header, records = read_trace(str(path))
    steps = sim.access_sequence(records)
    predicted = sim.simulate(steps, 3, slots, sim.POLICIES[policy](3, steps))
    stats = model.stats()
    assert (stats["cache_hits"], stats["cache_misses"]) == (predicted["hits"], predicted["misses"])
