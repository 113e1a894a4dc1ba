"""Matrix kernels of edgemoe._core: scalar reference vs numpy, SIMD variants vs scalar."""
import numpy as np
import pytest

from edgemoe import _core
from edgemoe.format import quant as Q

ALL = (Q.F32, Q.F16, Q.Q8, Q.Q4, Q.Q3, Q.Q2, Q.Q4K, Q.MXFP4)
SIMD = [isa for isa in _core.available_isas() if isa != "scalar"]
# Rows/tokens counts that hit single-token decode, every tile shape (up to
# 8 rows for decode, 4 rows x 4 tokens for prefill) and their remainders.
COUNTS = (1, 3, 17, 65)


@pytest.fixture(autouse=True)
def restore_isa():
    before = _core.current_isa()
    yield
    _core.set_isa(before)


def case(qtype, rows, k, n, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, k)).astype(np.float32) * 0.05
    x = rng.standard_normal((n, k)).astype(np.float32)
    x[:, :5] *= 20  # outliers, as real activations have
    buf = Q.quantize(w, qtype)
    return buf, Q.dequantize(buf, qtype, w.shape).astype(np.float64), x


def run(isa, qtype, buf, rows, x):
    _core.set_isa(isa)
    return _core.matmul(qtype, buf, rows, x).astype(np.float64)


def quantize_x_like_runtime(x):
    """Activation quantization as the kernels do it, in float32 (IEEE, so bit-identical)."""
    g = x.reshape(x.shape[0], -1, 32).astype(np.float32)
    amax = np.abs(g).max(-1, keepdims=True)
    d = amax / np.float32(127)
    # Scales below FLT_MIN (1/d would overflow) are treated as all-zero groups.
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d >= np.finfo(np.float32).tiny)
    q = np.rint(g * inv)
    return (q.astype(np.float64) * d).reshape(x.shape), d


def test_isa_listing():
    isas = _core.available_isas()
    assert isas[0] == "scalar"
    assert _core.current_isa() == isas[-1]  # best variant by default
    with pytest.raises(ValueError):
        _core.set_isa("no-such-isa")


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16])
def test_scalar_float_weights_match_numpy(qtype):
    for k in (1, 7, 33, 100):
        buf, w, x = case(qtype, 5, k, 3, seed=k)
        y = run("scalar", qtype, buf, 5, x)
        # k float32 products summed in any order are off by at most
        # gamma_k * sum|w_i x_i|, gamma_k = k u / (1 - k u) with u = 2^-24
        # (standard error bound); (k + 1) u covers it for these k.
        bound = (k + 1) * 2.0**-24 * (np.abs(x) @ np.abs(w).T)
        assert np.all(np.abs(y - x @ w.T) <= bound + 1e-30)


@pytest.mark.parametrize("qtype", Q.QUANTIZED)
def test_scalar_quantized_weights_match_numpy(qtype):
    k, rows, n = 256, 9, 4
    buf, w, x = case(qtype, rows, k, n)
    y = run("scalar", qtype, buf, rows, x)
    scale = np.abs(x) @ np.abs(w).T

    # 1) Against the exact product: activations are rounded to d_x * q with
    #    |error| <= d_x / 2 per element, d_x = amax(group) / 127, so each output
    #    may be off by sum_i |w_i| * d_x(i) / 2 (plus float rounding).
    xq, d = quantize_x_like_runtime(x)
    half_step = np.repeat(d[..., 0], 32, axis=1) / 2
    bound = half_step @ np.abs(w).T + 1e-5 * scale
    assert np.all(np.abs(y - x @ w.T) <= bound)

    # 2) Against the product with activations quantized the same way: only
    #    float accumulation order differs (integer group sums are exact).
    np.testing.assert_array_less(np.abs(y - xq @ w.T), 1e-5 * scale + 1e-30)


@pytest.mark.skipif(not SIMD, reason="no SIMD variant on this CPU/build")
@pytest.mark.parametrize("isa", SIMD)
@pytest.mark.parametrize("qtype", ALL)
def test_simd_matches_scalar(isa, qtype):
    ks = (256, 768) if qtype == Q.Q4K else (32, 96, 256) if qtype in Q.QUANTIZED else (1, 7, 8, 33, 100)
    for k in ks:
        for rows in COUNTS:
            for n in COUNTS:
                buf, w, x = case(qtype, rows, k, n, seed=k * 1000 + rows * 10 + n)
                ref = run("scalar", qtype, buf, rows, x)
                got = run(isa, qtype, buf, rows, x)
                # Same integer group sums (identical activation blocks), so only
                # the order of float additions differs. Measured worst case is
                # ~1e-6 of sum|terms| (relative to that, not to y, because y
                # itself can cancel to ~0); 1e-5 is ~10x margin.
                tol = 1e-5 * (np.abs(x) @ np.abs(w).T) + 1e-30
                err = np.abs(got - ref)
                assert np.all(err <= tol), f"{isa} {Q.NAMES[qtype]} k={k} rows={rows} n={n}: {err.max()}"


@pytest.mark.skipif(not SIMD, reason="no SIMD variant on this CPU/build")
@pytest.mark.parametrize("isa", SIMD)
@pytest.mark.parametrize("qtype", ALL)
def test_simd_matches_scalar_in_token_blocks(isa, qtype):
    # Long rows make the prefill path split tokens into several L2-sized blocks.
    k, rows, n = 4096, 5, 70
    buf, w, x = case(qtype, rows, k, n, seed=7)
    ref = run("scalar", qtype, buf, rows, x)
    got = run(isa, qtype, buf, rows, x)
    assert np.all(np.abs(got - ref) <= 1e-5 * (np.abs(x) @ np.abs(w).T))


@pytest.mark.parametrize("isa", _core.available_isas())
def test_activation_rounding_ties_and_zero_groups(isa):
    # amax = 127 gives d = 1 exactly, so x = 2.5 lands on a tie: every variant
    # must round half to even (2, -4, 0), and an all-zero group must yield 0.
    x = np.zeros((1, 96), np.float32)
    x[0, :4] = [127.0, 2.5, -3.5, 0.5]
    x[0, 64:68] = [1e-39, -1e-39, 0, 0]  # scale underflow: stored as zeros
    w = np.zeros((96, 96), np.float32)
    np.fill_diagonal(w, 127.0)  # q8 stores this exactly (d = 1, q = 127): y = 127 * quantized x
    buf = Q.quantize(w, Q.Q8)
    y = run(isa, Q.Q8, buf, 96, x)[0] / 127
    assert list(y[:4]) == [127.0, 2.0, -4.0, 0.0]
    assert np.all(y[4:] == 0)


@pytest.mark.parametrize("isa", _core.available_isas())
def test_extreme_q8_codes_do_not_saturate(isa):
    # Every product at +-127 * 127 and a stray -128 weight: the 16-bit pair
    # sums in the SIMD path must not saturate.
    k = 64
    block = np.zeros(34, np.uint8)
    block[:2] = np.array([1.0], "<f2").view(np.uint8)
    q = np.full(32, -127, np.int8)
    q[0] = -128
    block[2:] = q.view(np.uint8)
    buf = np.tile(block, (3, k // 32)).reshape(-1)
    x = np.full((2, k), -1.0, np.float32)
    y = run(isa, Q.Q8, buf, 3, x)  # x quantizes to q = -127, d = 1/127 (rounded)
    np.testing.assert_allclose(y, 2 * (128 + 31 * 127), rtol=1e-6)


def test_matmul_rejects_bad_arguments():
    buf = Q.quantize(np.zeros((4, 64), np.float32), Q.Q8)
    x = np.zeros((2, 64), np.float32)
    with pytest.raises(ValueError, match="size"):
        _core.matmul(Q.Q8, buf[:-1], 4, x)
    with pytest.raises(ValueError, match="size"):
        _core.matmul(Q.Q8, buf, 5, x)
    with pytest.raises(ValueError):
        _core.matmul(Q.Q8, Q.quantize(np.zeros((4, 32), np.float32), Q.Q8), 4, np.zeros((2, 33), np.float32))
    with pytest.raises(ValueError):
        _core.matmul(9, buf, 4, x)


@pytest.mark.parametrize("isa", _core.available_isas())
def test_empty_shapes(isa):
    _core.set_isa(isa)
    assert _core.matmul(Q.Q8, np.zeros(0, np.uint8), 0, np.ones((2, 64), np.float32)).shape == (2, 0)
    buf = Q.quantize(np.ones((3, 64), np.float32), Q.Q4)
    assert _core.matmul(Q.Q4, buf, 3, np.ones((0, 64), np.float32)).shape == (0, 3)
