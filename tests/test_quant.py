"""edgemoe.format.quant: the numpy reference encoders and their byte layout (qtypes.h)."""
import numpy as np
import pytest

from edgemoe import _core
from edgemoe.format import quant as Q
from edgemoe.errors import FormatError

ALL = (Q.F32, Q.F16, Q.Q8, Q.Q4, Q.Q3, Q.Q2)
EPS32 = np.finfo(np.float32).eps


def weights(m, k, seed=0, scale=0.02):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((m, k)).astype(np.float32) * scale
    # Lopsided and outlier groups, as real expert weights have.
    w[0, :32] += 0.1
    w[1 % m, 5] = 0.7
    return w


def block_scales(buf, m, block_bytes):
    """The fp16 d that opens every q8/q4 block, as float32 [m, groups]."""
    return buf.reshape(m, -1, block_bytes)[:, :, :2].copy().view("<f2")[..., 0].astype(np.float32)


def test_row_bytes_match_runtime():
    for k in (256, 512, 4096):
        for t in ALL + (Q.Q4K,):
            assert Q.row_bytes(t, k) == _core.row_bytes(t, k)
    assert Q.row_bytes(Q.F32, 7) == 28 and Q.row_bytes(Q.F16, 7) == 14
    assert Q.row_bytes(Q.Q8, 64) == 68 and Q.row_bytes(Q.Q4, 64) == 40 and Q.row_bytes(Q.Q4K, 512) == 288
    assert Q.NAMES == {0: "f32", 1: "f16", 2: "q8", 3: "q4", 4: "q3", 5: "q2", 6: "q4k", 7: "mxfp4"}
    assert Q.row_bytes(Q.MXFP4, 64) == 34 == _core.row_bytes(Q.MXFP4, 64)


@pytest.mark.parametrize("qtype", Q.QUANTIZED)
def test_quantized_types_need_whole_groups(qtype):
    with pytest.raises(FormatError, match=f"multiple of {256 if qtype == Q.Q4K else 32}"):
        Q.quantize(np.zeros((2, 33), np.float32), qtype)
    with pytest.raises(FormatError):
        Q.row_bytes(qtype, 48)
    with pytest.raises(FormatError):
        _core.row_bytes(qtype, 48)


def test_float_types_take_any_length():
    w = weights(3, 7)
    assert np.array_equal(Q.dequantize(Q.quantize(w, Q.F32), Q.F32, w.shape), w)
    assert np.array_equal(Q.dequantize(Q.quantize(w, Q.F16), Q.F16, w.shape), w.astype(np.float16).astype(np.float32))


def test_q8_round_trip_error_is_at_most_half_a_step():
    m, k = 64, 256
    w = weights(m, k)
    buf = Q.quantize(w, Q.Q8)
    assert buf.dtype == np.uint8 and buf.shape == (m * Q.row_bytes(Q.Q8, k),)
    err = np.abs(Q.dequantize(buf, Q.Q8, w.shape) - w).reshape(m, -1, 32).max(axis=-1)
    d = block_scales(buf, m, 34)
    # The scale is rounded up to fp16, so no code clips: |err| <= d/2, plus
    # float rounding of d * q.
    assert np.all(err <= d / 2 + 2 * EPS32 * np.abs(w).max())
    # ...and the rounded-up scale is still within one fp16 step of amax / 127.
    amax = np.abs(w).reshape(m, -1, 32).max(axis=-1)
    assert np.all(d >= amax / 127) and np.all(d <= amax / 127 * (1 + 2.0**-10))


@pytest.mark.parametrize("qtype", [q for q in Q.LOW_BIT if q not in Q.REFINED])
def test_low_bit_round_trip_error_is_at_most_half_a_step(qtype):
    m, k = 64, 256
    top = 2 ** Q.BITS[qtype] - 1
    w = weights(m, k)
    w[2] += 3.0  # groups far from zero stress the fp16 offset
    buf = Q.quantize(w, qtype)
    block = Q.row_bytes(qtype, 32)
    assert buf.shape == (m * Q.row_bytes(qtype, k),) and block == {Q.Q4: 20, Q.Q3: 16, Q.Q2: 12}[qtype]
    err = np.abs(Q.dequantize(buf, qtype, w.shape) - w).reshape(m, -1, 32).max(axis=-1)
    d = block_scales(buf, m, block)
    # Offset rounded down and scale up to fp16: [min, max] fits in [m, m + top * d].
    assert np.all(err <= d / 2 + 4 * EPS32 * np.abs(w).max())
    # ...and the step is no coarser than the ideal (max - min) / top beyond one
    # fp16 step of the offset (lost by rounding it down) and of d itself.
    g = w.reshape(m, -1, 32)
    m_ulp = np.abs(np.spacing(g.min(-1).astype(np.float16))).astype(np.float32)
    assert np.all(d <= (g.max(-1) - g.min(-1) + m_ulp) / top * (1 + 2.0**-10) + 2.0**-24)


@pytest.mark.parametrize("qtype", Q.REFINED)
def test_refined_widths_never_do_worse_than_min_max(qtype):
    # q3/q2 refine (d, m) by least squares: per group the squared error is at most that of
    # the plain min-max code, and clearly lower overall on Gaussian weights.
    m, k = 64, 256
    w = weights(m, k)
    w[2] += 3.0
    g = w.reshape(m, -1, 32)
    d, mh, q = Q._quantize_asymmetric(w, Q.BITS[qtype])
    minmax = d.astype(np.float32)[..., None] * q + mh.astype(np.float32)[..., None]
    err_minmax = ((minmax - g) ** 2).sum(-1)
    back = Q.dequantize(Q.quantize(w, qtype), qtype, w.shape).reshape(m, -1, 32)
    err = ((back - g) ** 2).sum(-1)
    assert np.all(err <= err_minmax * (1 + 1e-6) + 1e-12)
    assert err.sum() < 0.9 * err_minmax.sum()


def test_degenerate_groups():
    w = np.zeros((2, 256), np.float32)
    w[1, 32:64] = 0.3  # constant but nonzero
    for qtype in Q.QUANTIZED:
        back = Q.dequantize(Q.quantize(w, qtype), qtype, w.shape)
        assert np.all(back[0] == 0) and np.all(back[1, :32] == 0) and np.all(back[1, 64:] == 0)
        # mxfp4's nearest value to 0.3 is 4 * 2^-4 (E2M1 has no finer step near its top)
        assert np.allclose(back[1, 32:64], 0.25 if qtype == Q.MXFP4 else 0.3, rtol=2.0**-11)
    q4 = Q.quantize(w, Q.Q4).reshape(2, 8, 20)
    assert np.all(q4[1, 1, :2] == 0) and np.all(q4[1, 1, 4:] == 0)  # d = 0, q = 0


def test_q8_hand_built_block_decodes():
    block = np.zeros(34, np.uint8)
    block[:2] = np.array([0.25], "<f2").view(np.uint8)
    q = np.arange(-16, 16, dtype=np.int8)
    q[0] = -127
    block[2:] = q.view(np.uint8)
    expect = 0.25 * q.astype(np.float32)
    assert np.array_equal(Q.dequantize(block, Q.Q8, (1, 32))[0], expect)
    assert np.array_equal(_core.dequantize_row(Q.Q8, block, 32), expect)


def test_q4_hand_built_block_decodes():
    # byte j = element j (low nibble) | element j + 16 (high nibble)
    block = np.zeros(20, np.uint8)
    block[0:2] = np.array([0.5], "<f2").view(np.uint8)
    block[2:4] = np.array([-1.0], "<f2").view(np.uint8)
    j = np.arange(16, dtype=np.uint8)
    block[4:] = j | ((15 - j) << 4)
    expect = np.concatenate([0.5 * j - 1.0, 0.5 * (15 - j) - 1.0]).astype(np.float32)
    assert np.array_equal(Q.dequantize(block, Q.Q4, (1, 32))[0], expect)
    assert np.array_equal(_core.dequantize_row(Q.Q4, block, 32), expect)


def low_bit_block(qtype, d, m, q):
    """A block built by hand from the layout in qtypes.h, not by the encoder."""
    head = np.concatenate([np.array([d], "<f2").view(np.uint8), np.array([m], "<f2").view(np.uint8)])
    pairs = np.zeros(8, np.uint8)
    for i, v in enumerate(q):
        pairs[i % 8] |= (int(v) & 3) << (2 * (i // 8))
    if qtype == Q.Q2:
        return np.concatenate([head, pairs])
    third = sum(((int(v) >> 2) & 1) << i for i, v in enumerate(q))
    return np.concatenate([head, pairs, np.frombuffer(third.to_bytes(4, "little"), np.uint8)])


@pytest.mark.parametrize("qtype", [Q.Q3, Q.Q2])
def test_q3_q2_hand_built_blocks_decode(qtype):
    q = (np.arange(32) * 5 + 3) % (2 ** Q.BITS[qtype])
    block = low_bit_block(qtype, 0.5, -1.0, q)
    assert block.size == Q.row_bytes(qtype, 32)
    expect = (0.5 * q - 1.0).astype(np.float32)
    assert np.array_equal(Q.dequantize(block, qtype, (1, 32))[0], expect)
    assert np.array_equal(_core.dequantize_row(qtype, block, 32), expect)


def test_f16_layout_is_little_endian_halves():
    row = np.array([1.0, -2.0, 0.5], "<f2").view(np.uint8)
    assert list(row[:2]) == [0x00, 0x3C]
    assert np.array_equal(_core.dequantize_row(Q.F16, row, 3), [1.0, -2.0, 0.5])


def test_runtime_decodes_every_f16_bit_pattern():
    # Exercises f16_to_f32 on all 65536 inputs: zeros, subnormals, inf, nan.
    h = np.arange(65536, dtype=np.uint16)
    got = _core.dequantize_row(Q.F16, h.view(np.uint8), 65536)
    want = h.view("<f2").astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


@pytest.mark.parametrize("qtype", ALL)
def test_runtime_decodes_like_numpy(qtype):
    m, k = 5, 96
    w = weights(m, k, seed=3)
    buf = Q.quantize(w, qtype)
    ref = Q.dequantize(buf, qtype, w.shape)
    rb = Q.row_bytes(qtype, k)
    for r in range(m):
        got = _core.dequantize_row(qtype, buf[r * rb : (r + 1) * rb], k)
        np.testing.assert_allclose(got, ref[r], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("qtype", ALL)
def test_chunked_encoding_matches_single_pass(qtype, monkeypatch):
    w = weights(37, 64, seed=5)
    whole = Q.quantize(w, qtype)
    decoded = Q.dequantize(whole, qtype, w.shape)
    monkeypatch.setattr(Q, "_CHUNK_ELEMS", 64 * 4)  # 4 rows per chunk, last one partial
    assert np.array_equal(Q.quantize(w, qtype), whole)
    assert np.array_equal(Q.dequantize(whole, qtype, w.shape), decoded)


def test_bad_inputs_raise_format_error():
    with pytest.raises(FormatError, match="NaN"):
        Q.quantize(np.full((1, 32), np.nan, np.float32), Q.Q8)
    with pytest.raises(FormatError, match="fp16"):
        Q.quantize(np.full((1, 32), 1e7, np.float32), Q.Q8)
    with pytest.raises(FormatError, match="fp16"):
        Q.quantize(np.full((1, 4), 1e5, np.float32), Q.F16)
    with pytest.raises(FormatError, match="2-D"):
        Q.quantize(np.zeros(32, np.float32), Q.Q8)
    with pytest.raises(FormatError, match="unknown weight type"):
        Q.quantize(np.zeros((1, 32), np.float32), 8)
    with pytest.raises(FormatError, match="bytes"):
        Q.dequantize(np.zeros(33, np.uint8), Q.Q8, (1, 32))
