"""Prefetch and cache policies change what is read and when, never the results."""
import itertools

import numpy as np
import pytest

import edgemoe
from edgemoe.options import CHOICES
from conftest import reference


def decode(model, ids):
    model.reset()
    return np.stack([model.eval([t]) for t in ids])


@pytest.fixture(scope="module")
def baseline(converted):
    path = converted("olmoe", "4")
    ids = reference("olmoe")["input_ids"].tolist()
    model = edgemoe.load(path, threads=2, predictor="none", cache_policy="lru")
    return path, ids, model.logits(ids), decode(model, ids)


# stats and token need a profile: tests/test_profile.py covers them on a profiled container.
@pytest.mark.parametrize("predictor,policy,slots", [
    (p, c, s) for p, c, s in itertools.product(["auto", "none", "gate"], CHOICES["cache_policy"], [2, 5, None])])
def test_results_are_bit_identical_for_every_predictor_and_policy(baseline, predictor, policy, slots):
    path, ids, full, steps = baseline
    model = edgemoe.load(path, threads=2, predictor=predictor, cache_policy=policy, cache_experts=slots,
                         prefetch_depth=2, prefetch_min_confidence=0.0)
    np.testing.assert_array_equal(model.logits(ids), full)
    np.testing.assert_array_equal(decode(model, ids), steps)
    # and the greedy text
    assert model.generate(ids[:5], max_tokens=8, stop_at_eos=False) == \
        edgemoe.load(path, threads=1, predictor="none").generate(ids[:5], max_tokens=8, stop_at_eos=False)


@pytest.mark.parametrize("io_threads", [0, 2])
def test_results_do_not_depend_on_who_reads_prefetches(baseline, io_threads):
    path, ids, full, steps = baseline
    model = edgemoe.load(path, threads=2, predictor="gate", cache_experts=3, io_threads=io_threads,
                         prefetch_min_confidence=0.0)
    np.testing.assert_array_equal(model.logits(ids), full)
    np.testing.assert_array_equal(decode(model, ids), steps)


def _check_counter_invariants(s):
    assert s["prefetch_loaded"] + s["prefetch_cancelled"] <= s["prefetch_issued"]
    assert s["prefetch_hits"] <= s["prefetch_loaded"]
    assert s["prefetch_wasted"] <= s["prefetch_loaded"]


def test_gate_prefetch_counters(converted):
    # On the fixture with trained-like scales the next layer's router, applied
    # early, predicts well: prefetched experts turn demand misses into hits.
    # io_threads=0 reads each prefetch when it is issued, so whether it arrives
    # before it is needed does not depend on how the OS schedules an I/O thread
    # (on a loaded machine the background thread may not run before the layer).
    path = converted("mixtral_smooth", "8")
    ids = reference("mixtral_smooth")["input_ids"].tolist()
    # Ungated: on this 2-layer model the gate's confidence rarely reaches the default 0.5.
    model = edgemoe.load(path, threads=1, predictor="gate", cache_experts=4, io_threads=0,
                         prefetch_min_confidence=0.0)
    decode(model, ids)
    s = model.stats()
    assert s["prefetch_issued"] > 0
    _check_counter_invariants(s)
    assert s["prefetch_hits"] > 0
    none = edgemoe.load(path, threads=1, predictor="none", cache_experts=4)
    decode(none, ids)
    assert none.stats()["prefetch_issued"] == 0
    # experts that arrive by prefetch are no longer demand misses
    assert s["cache_misses"] < none.stats()["cache_misses"]
    # with a background reader how many arrive in time is the scheduler's business; the
    # accounting must still add up
    background = edgemoe.load(path, threads=1, predictor="gate", cache_experts=4, io_threads=1)
    decode(background, ids)
    assert background.stats()["prefetch_issued"] > 0
    _check_counter_invariants(background.stats())


def test_unknown_names_are_refused(converted):
    path = converted("olmoe", "8")
    with pytest.raises(ValueError, match="unknown predictor 'psychic'"):
        edgemoe.load(path, predictor="psychic")
    with pytest.raises(ValueError, match="unknown cache_policy 'fifo'"):
        edgemoe.load(path, cache_policy="fifo")
