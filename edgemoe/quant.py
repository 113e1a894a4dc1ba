"""Reference weight quantizers (numpy), byte-compatible with csrc/common/qtypes.h.

Rows of a matrix are encoded back to back; a quantized row is a run of blocks,
one per group of ``GROUP`` = 32 consecutive elements:

* ``q8`` (34 bytes/block): fp16 scale ``d`` then 32 int8 ``q``; ``w = d * q``.
* ``q4`` (20 bytes/block): fp16 scale ``d``, fp16 offset ``m``, then 16 bytes
  where byte ``j`` holds element ``j`` (low nibble) and ``j + 16`` (high
  nibble); ``w = d * q + m`` with ``q`` in ``[0, 15]``.
* ``q3`` (16 bytes/block, 4 bits per weight with its scales): ``d``, ``m``,
  then 8 bytes of low bit pairs (byte ``j`` holds elements ``j``, ``j + 8``,
  ``j + 16``, ``j + 24`` in bits 0-1, 2-3, 4-5, 6-7), then 4 bytes whose bit
  ``i`` (little-endian) is element ``i``'s third bit; ``q`` in ``[0, 7]``.
* ``q2`` (12 bytes/block, 3 bits per weight): ``d``, ``m``, then the 8 bytes
  of bit pairs as in ``q3``; ``q`` in ``[0, 3]``.

Why q8 is symmetric and q4 asymmetric: with 255 levels, spending one level
on a zero point buys almost nothing, and a symmetric code keeps the kernel's
inner product a plain int8 x int8 sum. With only 16 levels, centring them on
zero wastes about half the range whenever a group is lopsided (common in
expert weights); mapping [min, max] onto the 16 levels roughly halves the
step size, and the extra ``m * sum(x)`` term costs the kernel one multiply per
group because the activation blocks carry ``sum(x)``.

Quantized codes are always computed from the fp16-rounded ``d`` and ``m``
actually stored, so decoding reproduces exactly what the encoder meant. For
``q3`` and ``q2`` the min-max ``d`` and ``m`` are then refined by least squares
(a slightly clipped fit: measured 13 % / 23 % lower RMS error on Gaussian
weights); ``q4`` keeps min-max, which bounds every element's error by d/2.
"""
from __future__ import annotations

import numpy as np

from .errors import FormatError

F32, F16, Q8, Q4, Q3, Q2 = 0, 1, 2, 3, 4, 5
GROUP = 32
NAMES = {F32: "f32", F16: "f16", Q8: "q8", Q4: "q4", Q3: "q3", Q2: "q2"}
CODES = {name: code for code, name in NAMES.items()}
BITS = {F32: 32, F16: 16, Q8: 8, Q4: 4, Q3: 3, Q2: 2}
QUANTIZED = (Q8, Q4, Q3, Q2)
LOW_BIT = (Q4, Q3, Q2)  # asymmetric: w = d * q + m


def supports(qtype: int, k: int) -> bool:
    """True if rows of ``k`` elements can be stored as ``qtype`` (quantized types need whole groups)."""
    return qtype in NAMES and k > 0 and (qtype not in QUANTIZED or k % GROUP == 0)

# Block layouts of qtypes.h as packed numpy records (numpy does not pad
# unaligned structured dtypes, so itemsize matches sizeof()).
_BLOCK_Q8 = np.dtype([("d", "<f2"), ("qs", "i1", (GROUP,))])
_BLOCK_Q4 = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", (GROUP // 2,))])
_BLOCK_Q3 = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", (GROUP // 4,)), ("qh", "u1", (GROUP // 8,))])
_BLOCK_Q2 = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", (GROUP // 4,))])
assert (_BLOCK_Q8.itemsize, _BLOCK_Q4.itemsize, _BLOCK_Q3.itemsize, _BLOCK_Q2.itemsize) == (34, 20, 16, 12)
_BLOCKS = {Q8: _BLOCK_Q8, Q4: _BLOCK_Q4, Q3: _BLOCK_Q3, Q2: _BLOCK_Q2}

# Rows per chunk are chosen so each temporary holds about this many elements
# (~16 MB as float32), bounding peak memory on very large matrices.
_CHUNK_ELEMS = 1 << 22


def _check_qtype(qtype: int) -> None:
    if qtype not in NAMES:
        raise FormatError(f"unknown weight type code {qtype!r} (expected one of {sorted(NAMES)})")


def _check_k(qtype: int, k: int) -> None:
    _check_qtype(qtype)
    if k <= 0:
        raise FormatError(f"row length must be positive, got {k}")
    if qtype in QUANTIZED and k % GROUP:
        raise FormatError(
            f"row length {k} cannot be stored as {NAMES[qtype]}: quantized types need a multiple of {GROUP}"
        )


def row_bytes(qtype: int, k: int) -> int:
    """Bytes of one encoded row of ``k`` elements."""
    _check_k(qtype, k)
    if qtype == F32:
        return 4 * k
    if qtype == F16:
        return 2 * k
    return k // GROUP * _BLOCKS[qtype].itemsize


def _row_chunks(m: int, k: int):
    step = max(1, _CHUNK_ELEMS // max(k, 1))
    for r0 in range(0, m, step):
        yield r0, min(m, r0 + step)


def _to_f16(v: np.ndarray, what: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = v.astype("<f2")
    if not np.all(np.isfinite(h)):
        raise FormatError(f"{what} exceeds the fp16 range (|value| > 65504); cannot encode")
    return h


def _f16_toward(v: np.ndarray, direction: float, what: str) -> np.ndarray:
    """fp16 nearest to v, then moved one step toward `direction` where it landed on the wrong side."""
    h = _to_f16(v, what)
    wrong = h.astype(np.float32) > v if direction < 0 else h.astype(np.float32) < v
    h[wrong] = np.nextafter(h[wrong], np.float16(direction))
    if not np.all(np.isfinite(h)):
        raise FormatError(f"{what} exceeds the fp16 range (|value| > 65504); cannot encode")
    return h


def _quantize_q8(w: np.ndarray) -> np.ndarray:
    m, k = w.shape
    g = w.reshape(m, k // GROUP, GROUP)
    amax = np.abs(g).max(axis=-1)
    # Scale rounded *up* to fp16, so amax / d <= 127 and no code is clipped:
    # every element is then within d/2 of its decoded value.
    d = _f16_toward(amax / 127.0, np.inf, "q8 group scale")
    d32 = d.astype(np.float32)
    inv = np.divide(1.0, d32, out=np.zeros_like(d32), where=d32 > 0)
    # Belt and braces: float rounding of g * inv cannot reach 127.5, but clip anyway.
    q = np.clip(np.rint(g * inv[..., None]), -127, 127).astype(np.int8)
    out = np.empty((m, k // GROUP), dtype=_BLOCK_Q8)
    out["d"] = d
    out["qs"] = q
    return out


def _quantize_asymmetric(w: np.ndarray, bits: int):
    """Codes q in [0, 2**bits - 1] with fp16 d and m such that w ~= d * q + m, per group."""
    m, k = w.shape
    top = (1 << bits) - 1
    g = w.reshape(m, k // GROUP, GROUP)
    lo = g.min(axis=-1)
    hi = g.max(axis=-1)
    flat = hi == lo
    what = f"q{bits} group"
    # Offset rounded *down* and scale rounded *up* to fp16, so [min, max] sits
    # inside [m, m + top * d] and no code is clipped: every element is within
    # d/2 of its decoded value. A constant group (max == min) gets d = 0, q = 0
    # and the nearest fp16 offset.
    mh = np.where(flat, _to_f16(lo, what + " minimum"), _f16_toward(lo, -np.inf, what + " minimum"))
    m32 = mh.astype(np.float32)
    d = np.where(flat, np.float16(0), _f16_toward((hi - m32) / top, np.inf, what + " scale"))
    d32 = d.astype(np.float32)
    inv = np.divide(1.0, d32, out=np.zeros_like(d32), where=d32 > 0)
    q = np.clip(np.rint((g - m32[..., None]) * inv[..., None]), 0, top).astype(np.uint8)
    return d, mh, q


def _refine_asymmetric(g: np.ndarray, d: np.ndarray, mh: np.ndarray, q: np.ndarray, bits: int, rounds: int = 4):
    """Least-squares refinement of (d, m) for fixed codes, then codes for the new (d, m), kept
    per group only where the squared error drops. Min-max scaling wastes levels on a group's
    extremes; with 4-16 levels a slightly clipped fit halves the error of typical groups."""
    top = (1 << bits) - 1

    def sq_err(d16, m16, codes):
        return (((d16.astype(np.float32)[..., None] * codes + m16.astype(np.float32)[..., None]) - g) ** 2).sum(-1)

    best = sq_err(d, mh, q)
    for _ in range(rounds):
        qf = q.astype(np.float32)
        n = np.float32(GROUP)
        sq, sw, sqq, sqw = qf.sum(-1), g.sum(-1), (qf * qf).sum(-1), (qf * g).sum(-1)
        det = n * sqq - sq * sq
        ok = det > 0
        safe = np.where(ok, det, 1.0)
        d_new = np.where(ok, (n * sqw - sq * sw) / safe, d.astype(np.float32))
        m_new = np.where(ok, (sqq * sw - sq * sqw) / safe, mh.astype(np.float32))
        d_new = np.maximum(d_new, 0.0)
        with np.errstate(over="ignore"):
            d16, m16 = d_new.astype("<f2"), m_new.astype("<f2")
        finite = np.isfinite(d16) & np.isfinite(m16)
        d16 = np.where(finite, d16, d)
        m16 = np.where(finite, m16, mh)
        d32 = d16.astype(np.float32)
        inv = np.divide(1.0, d32, out=np.zeros_like(d32), where=d32 > 0)
        q_new = np.clip(np.rint((g - m16.astype(np.float32)[..., None]) * inv[..., None]), 0, top).astype(np.uint8)
        err = sq_err(d16, m16, q_new)
        better = err < best
        d, mh = np.where(better, d16, d), np.where(better, m16, mh)
        q = np.where(better[..., None], q_new, q)
        best = np.minimum(err, best)
    return d, mh, q


def _pack_2bit(q: np.ndarray) -> np.ndarray:
    """[..., 32] codes < 4 -> [..., 8] bytes: byte j holds elements j, j+8, j+16, j+24."""
    q = q & 3
    return q[..., 0:8] | (q[..., 8:16] << 2) | (q[..., 16:24] << 4) | (q[..., 24:32] << 6)


def _unpack_2bit(b: np.ndarray) -> np.ndarray:
    return np.concatenate([(b >> s) & 3 for s in (0, 2, 4, 6)], axis=-1)


# Widths whose (d, m) are refined by least squares after the min-max start (see
# _refine_asymmetric); q4 keeps the exact min-max code (no element beyond half a step).
REFINED = (Q3, Q2)


def _quantize_low_bit(w: np.ndarray, qtype: int) -> np.ndarray:
    d, mh, q = _quantize_asymmetric(w, BITS[qtype])
    if qtype in REFINED:
        g = w.reshape(w.shape[0], w.shape[1] // GROUP, GROUP).astype(np.float32)
        d, mh, q = _refine_asymmetric(g, d, mh, q, BITS[qtype])
    out = np.empty(d.shape, dtype=_BLOCKS[qtype])
    out["d"] = d
    out["m"] = mh
    if qtype == Q4:
        out["qs"] = q[..., : GROUP // 2] | (q[..., GROUP // 2 :] << 4)
    else:
        out["qs"] = _pack_2bit(q)
        if qtype == Q3:
            third = ((q >> 2) & 1).reshape(*q.shape[:-1], GROUP // 8, 8)
            out["qh"] = (third << np.arange(8, dtype=np.uint8)).sum(axis=-1).astype(np.uint8)
    return out


def _rows(buf, qtype: int, shape):
    """(m, k, the bytes of an [M, K] matrix of type qtype as [M, row_bytes]); FormatError if
    the buffer does not hold exactly that."""
    m, k = (int(s) for s in shape)
    rb = row_bytes(qtype, k)
    raw = np.frombuffer(buf, dtype=np.uint8) if not isinstance(buf, np.ndarray) else buf.reshape(-1).view(np.uint8)
    if raw.size != m * rb:
        raise FormatError(
            f"buffer holds {raw.size} bytes but {m} rows of {NAMES[qtype]} with k={k} need {m * rb}"
        )
    return m, k, raw.reshape(m, rb)


def blocks(buf, qtype: int, shape) -> np.ndarray:
    """A quantized [M, K] matrix's bytes viewed as its block records, [M, K / 32] (fields d, qs,
    and m for the low-bit types): for exporters that re-encode our codes in another format."""
    if qtype not in _BLOCKS:
        raise FormatError(f"{NAMES.get(qtype, qtype)} is not a block-quantized type")
    return np.ascontiguousarray(_rows(buf, qtype, shape)[2]).view(_BLOCKS[qtype])


def codes(b: np.ndarray, qtype: int) -> np.ndarray:
    """The [..., 32] unsigned codes of low-bit blocks b, in element order."""
    if qtype == Q4:
        return np.concatenate([b["qs"] & 0x0F, b["qs"] >> 4], axis=-1)
    q = _unpack_2bit(b["qs"])
    if qtype == Q3:
        third = (b["qh"][..., :, None] >> np.arange(8, dtype=np.uint8)) & 1  # [..., 4, 8]: element 8i + j
        q = q | (third.reshape(*q.shape) << 2)
    return q


def quantize(w: np.ndarray, qtype: int) -> np.ndarray:
    """Encode a [M, K] matrix; returns flat uint8 bytes, M rows of row_bytes(qtype, K)."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise FormatError(f"expected a 2-D weight matrix, got shape {w.shape}")
    m, k = w.shape
    rb = row_bytes(qtype, k)
    out = np.empty(m * rb, dtype=np.uint8)
    rows = out.reshape(m, rb)
    for r0, r1 in _row_chunks(m, k):
        chunk = np.asarray(w[r0:r1], dtype=np.float32)
        if not np.all(np.isfinite(chunk)):
            raise FormatError(f"weights contain NaN or infinity (rows {r0}..{r1 - 1})")
        if qtype == F32:
            enc = chunk.astype("<f4")
        elif qtype == F16:
            enc = _to_f16(chunk, "weight value")
        elif qtype == Q8:
            enc = _quantize_q8(chunk)
        else:
            enc = _quantize_low_bit(chunk, qtype)
        rows[r0:r1] = np.ascontiguousarray(enc).view(np.uint8).reshape(r1 - r0, rb)
    return out


def dequantize(buf, qtype: int, shape) -> np.ndarray:
    """Decode bytes produced by quantize() back to a float32 [M, K] matrix."""
    m, k, rows = _rows(buf, qtype, shape)
    out = np.empty((m, k), dtype=np.float32)
    for r0, r1 in _row_chunks(m, k):
        part = np.ascontiguousarray(rows[r0:r1])
        if qtype == F32:
            out[r0:r1] = part.view("<f4")
        elif qtype == F16:
            out[r0:r1] = part.view("<f2")
        elif qtype == Q8:
            b = part.view(_BLOCK_Q8)  # [rows, groups]
            d = b["d"].astype(np.float32)[..., None]
            out[r0:r1] = (d * b["qs"].astype(np.float32)).reshape(r1 - r0, k)
        else:
            b = part.view(_BLOCKS[qtype])
            d = b["d"].astype(np.float32)[..., None]
            mm = b["m"].astype(np.float32)[..., None]
            out[r0:r1] = (d * codes(b, qtype).astype(np.float32) + mm).reshape(r1 - r0, k)
    return out
