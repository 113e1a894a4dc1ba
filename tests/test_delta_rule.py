"""The gated delta rule kernel (Gated DeltaNet's recurrence, csrc/kernels/delta_rule.cpp) against a
float64 numpy transcription of transformers' torch_recurrent_gated_delta_rule, on every kernel set
of this machine (NEON under qemu: tests/cpp/test_kernels_cross.cpp)."""
import numpy as np
import pytest

from edgemoe import _core

# Measured 9.5e-8 of the largest magnitude (state or output) over these shapes on scalar, AVX2 and
# AVX-512; taking the output from the state before its update gives 0.3-1.
TOL = 1e-6


@pytest.fixture(autouse=True)
def restore_isa():
    before = _core.current_isa()
    yield
    _core.set_isa(before)


def reference(S, q, k, v, decay, beta):
    """transformers' recurrence, per token: decay, delta rule update, read with q (float64)."""
    S = S.astype(np.float64).copy()
    out = []
    for t in range(len(q)):
        S *= decay[t]
        delta = (v[t] - S.T @ k[t]) * beta[t]
        S += np.outer(k[t], delta)
        out.append(S.T @ q[t])
    return S, np.array(out)


def case(dk, dv, n, seed):
    rng = np.random.default_rng(seed)
    unit = lambda x: x / np.sqrt((x * x).sum(-1, keepdims=True) + 1e-6)  # noqa: E731 (l2norm as the model applies it)
    return (rng.standard_normal((dk, dv)).astype(np.float32) * 0.3,
            (unit(rng.standard_normal((n, dk))) / np.sqrt(dk)).astype(np.float32),
            unit(rng.standard_normal((n, dk))).astype(np.float32),
            rng.standard_normal((n, dv)).astype(np.float32),
            rng.uniform(0.05, 1, n).astype(np.float32), rng.uniform(0.05, 1, n).astype(np.float32))


@pytest.mark.parametrize("isa", _core.available_isas())
@pytest.mark.parametrize("dk,dv,n", [(1, 1, 1), (3, 5, 4), (8, 8, 1), (16, 24, 9), (20, 130, 3), (128, 128, 70)])
def test_the_kernel_computes_transformers_recurrence(isa, dk, dv, n):
    args = case(dk, dv, n, seed=dk * 1000 + dv)
    _core.set_isa(isa)
    state, out = _core.gated_delta_rule(*args)
    ref_state, ref_out = reference(*args)
    scale = max(np.abs(ref_state).max(), np.abs(ref_out).max())
    assert np.abs(state - ref_state).max() < TOL * scale
    assert np.abs(out - ref_out).max() < TOL * scale


def test_the_reference_tells_the_updated_state_from_the_old():
    # What the tolerance guards against: reading the output before the update.
    S, q, k, v, decay, beta = case(16, 24, 9, seed=1)
    _, out = _core.gated_delta_rule(S, q, k, v, decay, beta)
    wrong = []
    state = S.astype(np.float64)
    for t in range(len(q)):
        state = state * decay[t]
        wrong.append(state.T @ q[t])
        state = state + np.outer(k[t], (v[t] - state.T @ k[t]) * beta[t])
    assert np.abs(out - np.array(wrong)).max() > 100 * TOL * np.abs(out).max()


def test_shapes_that_disagree_are_refused():
    S, q, k, v, decay, beta = case(4, 6, 2, seed=2)
    with pytest.raises(ValueError, match="shapes disagree"):
        _core.gated_delta_rule(S, q, k[:1], v, decay, beta)
    with pytest.raises(ValueError, match="2-D"):
        _core.gated_delta_rule(S.ravel(), q, k, v, decay, beta)
