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
* ``q4k`` (144 bytes per super-block of 256 elements, 4.5 bits per weight): the
  layout of llama.cpp's Q4_K, so its GGUF blocks are copied as they are. fp16
  ``d`` and ``dmin``, 12 bytes holding eight 6-bit scales ``sc`` and eight
  6-bit minimums ``mn`` (one pair per group of 32), then 128 bytes of nibbles:
  for each 64 elements, 32 bytes whose low nibbles are the first group and high
  nibbles the second. ``w = d * sc * q - dmin * mn`` with ``q`` in ``[0, 15]``.
  The same asymmetric code as ``q4`` in 10 % fewer bytes: the per-group scale
  and offset are 6-bit fractions of the super-block's instead of fp16 numbers.

* ``mxfp4`` (17 bytes/block, 4.25 bits per weight): an E8M0 exponent and 32 E2M1 codes, the
  layout of llama.cpp's MXFP4 and gpt-oss's experts; see edgemoe/format/mxfp4.py.

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

from typing import Iterator

import numpy as np

from ..errors import FormatError
from . import mxfp4

F32, F16, Q8, Q4, Q3, Q2, Q4K, MXFP4 = 0, 1, 2, 3, 4, 5, 6, 7
GROUP = 32
SUPER = 256  # elements per q4k super-block
NAMES = {F32: "f32", F16: "f16", Q8: "q8", Q4: "q4", Q3: "q3", Q2: "q2", Q4K: "q4k", MXFP4: "mxfp4"}
CODES = {name: code for code, name in NAMES.items()}
BITS = {F32: 32, F16: 16, Q8: 8, Q4: 4, Q3: 3, Q2: 2, Q4K: 4, MXFP4: 4}  # mxfp4: 4.25 with its exponents
QUANTIZED = (Q8, Q4, Q3, Q2, Q4K, MXFP4)
LOW_BIT = (Q4, Q3, Q2)  # asymmetric per group: w = d * q + m (q4k: see above)


def row_multiple(qtype: int) -> int:
    """The row lengths a type can store are multiples of this."""
    return SUPER if qtype == Q4K else GROUP if qtype in QUANTIZED else 1


def supports(qtype: int, k: int) -> bool:
    """True if rows of ``k`` elements can be stored as ``qtype`` (quantized types need whole groups)."""
    return qtype in NAMES and k > 0 and k % row_multiple(qtype) == 0


def storable_type(qtype: int, ks) -> int:
    """The type to store rows of the lengths `ks` in when `qtype` is asked for: itself, else
    q4 for q4k (the same code in groups of 32), else f16."""
    if all(supports(qtype, k) for k in ks):
        return qtype
    if qtype == Q4K and all(supports(Q4, k) for k in ks):
        return Q4
    return F16

# Block layouts of qtypes.h as packed numpy records (numpy does not pad
# unaligned structured dtypes, so itemsize matches sizeof()).
_BLOCK_Q8 = np.dtype([("d", "<f2"), ("qs", "i1", (GROUP,))])
_BLOCK_Q4 = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", (GROUP // 2,))])
_BLOCK_Q3 = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", (GROUP // 4,)), ("qh", "u1", (GROUP // 8,))])
_BLOCK_Q2 = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", (GROUP // 4,))])
_BLOCK_Q4K = np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", (12,)), ("qs", "u1", (SUPER // 2,))])
assert (_BLOCK_Q8.itemsize, _BLOCK_Q4.itemsize, _BLOCK_Q3.itemsize, _BLOCK_Q2.itemsize,
        _BLOCK_Q4K.itemsize) == (34, 20, 16, 12, 144)
_BLOCKS = {Q8: _BLOCK_Q8, Q4: _BLOCK_Q4, Q3: _BLOCK_Q3, Q2: _BLOCK_Q2, Q4K: _BLOCK_Q4K, MXFP4: mxfp4.BLOCK}

# Rows per chunk are chosen so each temporary holds about this many elements (4 MB as float32):
# an encoder makes several such temporaries per chunk, and the converter holds one chunk of a
# large tensor at a time (tests/test_convert_api.py measures what that costs).
_CHUNK_ELEMS = 1 << 20


def _check_qtype(qtype: int) -> None:
    if qtype not in NAMES:
        raise FormatError(f"unknown weight type code {qtype!r} (expected one of {sorted(NAMES)})")


def _check_k(qtype: int, k: int) -> None:
    _check_qtype(qtype)
    if k <= 0:
        raise FormatError(f"row length must be positive, got {k}")
    if k % row_multiple(qtype):
        raise FormatError(
            f"row length {k} cannot be stored as {NAMES[qtype]}: it needs a multiple of {row_multiple(qtype)}"
        )


def row_bytes(qtype: int, k: int) -> int:
    """Bytes of one encoded row of ``k`` elements."""
    _check_k(qtype, k)
    if qtype == F32:
        return 4 * k
    if qtype == F16:
        return 2 * k
    return k // (row_multiple(qtype)) * _BLOCKS[qtype].itemsize


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


def _pack_scales_q4k(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """[..., 8] 6-bit scales and minimums -> [..., 12] bytes, Q4_K's packing: groups 0-3 in the
    low 6 bits of bytes 0-3 (scales) and 4-7 (minimums); groups 4-7 split, low 4 bits in bytes
    8-11 (scale low, minimum high nibble) and high 2 bits in the top bits of bytes 0-7."""
    sc, mn = sc.astype(np.uint8), mn.astype(np.uint8)
    a = sc[..., :4] | ((sc[..., 4:] >> 4) << 6)
    b = mn[..., :4] | ((mn[..., 4:] >> 4) << 6)
    c = (sc[..., 4:] & 0x0F) | ((mn[..., 4:] & 0x0F) << 4)
    return np.concatenate([a, b, c], axis=-1)


def scales_q4k(b: np.ndarray):
    """The [..., 8] 6-bit scales and minimums of q4k blocks b."""
    s = b["scales"]
    a, m, c = s[..., 0:4], s[..., 4:8], s[..., 8:12]
    sc = np.concatenate([a & 0x3F, (c & 0x0F) | ((a >> 6) << 4)], axis=-1)
    mn = np.concatenate([m & 0x3F, (c >> 4) | ((m >> 6) << 4)], axis=-1)
    return sc, mn


def _codes_q4k(qs: np.ndarray) -> np.ndarray:
    """[..., 128] nibble bytes -> [..., 8, 32] codes, group by group."""
    chunks = qs.reshape(*qs.shape[:-1], 4, 1, 32)
    return ((chunks >> np.array([0, 4], dtype=np.uint8).reshape(2, 1)) & 0x0F).reshape(*qs.shape[:-1], 8, 32)


def _quantize_q4k(w: np.ndarray) -> np.ndarray:
    """Each group's step and offset as for q3/q2 (min-max, then least-squares refinement), the
    offset kept <= 0 (the code subtracts it); the eight groups' steps and offsets as 6-bit
    fractions of the super-block's largest (rounded up, so none exceeds 63); then per group the
    best of rounding its 6-bit scale and minimum down or up, by squared error with the codes
    recomputed for each choice. Measured on the demo model's experts: 8 % lower RMS error than
    q4 and the same held-out perplexity (bench/RESULTS.md)."""
    m, k = w.shape
    d16, m16, q = _quantize_asymmetric(w, 4)
    d16, m16, _ = _refine_asymmetric(w.reshape(m, k // GROUP, GROUP).astype(np.float32), d16, m16, q, 4)
    g = w.reshape(m, k // SUPER, 8, GROUP)
    scale = d16.astype(np.float32).reshape(m, k // SUPER, 8)
    lo = m16.astype(np.float32).reshape(m, k // SUPER, 8)
    # A group above zero: its offset becomes 0, so its codes must span [0, max] instead.
    scale = np.where(lo > 0, g.max(axis=-1) / 15.0, scale)
    lo = np.minimum(lo, 0.0)
    d = _f16_toward(scale.max(axis=-1) / 63.0, np.inf, "q4k super-block scale")
    dmin = _f16_toward(-lo.min(axis=-1) / 63.0, np.inf, "q4k super-block minimum")
    d32, dmin32 = d.astype(np.float32)[..., None], dmin.astype(np.float32)[..., None]
    sc_ideal = np.divide(scale, d32, out=np.zeros_like(scale), where=d32 > 0)
    mn_ideal = np.divide(-lo, dmin32, out=np.zeros_like(lo), where=dmin32 > 0)
    best = None
    for sc in (np.floor(sc_ideal), np.ceil(sc_ideal)):
        for mn in (np.floor(mn_ideal), np.ceil(mn_ideal)):
            sc, mn = np.clip(sc, 0, 63), np.clip(mn, 0, 63)
            step, off = d32 * sc, dmin32 * mn
            inv = np.divide(1.0, step, out=np.zeros_like(step), where=step > 0)
            q = np.clip(np.rint((g + off[..., None]) * inv[..., None]), 0, 15)
            err = ((step[..., None] * q - off[..., None] - g) ** 2).sum(axis=-1)
            if best is None:
                best = [err, sc, mn, q]
            else:
                better = err < best[0]
                best = [np.where(better, err, best[0]), np.where(better, sc, best[1]), np.where(better, mn, best[2]),
                        np.where(better[..., None], q, best[3])]
    _, sc, mn, q = best
    q = q.astype(np.uint8).reshape(m, k // SUPER, 4, 2, GROUP)
    out = np.empty((m, k // SUPER), dtype=_BLOCK_Q4K)
    out["d"] = d
    out["dmin"] = dmin
    out["scales"] = _pack_scales_q4k(sc, mn)
    out["qs"] = (q[..., 0, :] | (q[..., 1, :] << 4)).reshape(m, k // SUPER, SUPER // 2)
    return out


def _dequantize_q4k(b: np.ndarray) -> np.ndarray:
    """[..., n] q4k blocks -> [..., n * 256] floats."""
    sc, mn = scales_q4k(b)
    step = b["d"].astype(np.float32)[..., None] * sc
    off = b["dmin"].astype(np.float32)[..., None] * mn
    y = step[..., None] * _codes_q4k(b["qs"]).astype(np.float32) - off[..., None]
    return y.reshape(*b.shape[:-1], b.shape[-1] * SUPER)


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
    """The [..., 32] unsigned codes of low-bit blocks b, in element order (q4k: [..., 8, 32])."""
    if qtype == Q4K:
        return _codes_q4k(b["qs"])
    if qtype == Q4:
        return np.concatenate([b["qs"] & 0x0F, b["qs"] >> 4], axis=-1)
    q = _unpack_2bit(b["qs"])
    if qtype == Q3:
        third = (b["qh"][..., :, None] >> np.arange(8, dtype=np.uint8)) & 1  # [..., 4, 8]: element 8i + j
        q = q | (third.reshape(*q.shape) << 2)
    return q


def quantize(w: np.ndarray, qtype: int) -> np.ndarray:
    """Encode a [M, K] matrix; returns flat uint8 bytes, M rows of row_bytes(qtype, K)."""
    if not hasattr(w, "shape"):
        w = np.asarray(w)
    if len(w.shape) != 2:
        raise FormatError(f"expected a 2-D weight matrix, got shape {w.shape}")
    rows = np.empty((w.shape[0], row_bytes(qtype, w.shape[1])), dtype=np.uint8)  # filled in place: no second copy
    r = 0
    for block in quantize_blocks(w, qtype):
        rows[r:r + len(block)] = block
        r += len(block)
    return rows.reshape(-1)


def quantize_blocks(w, qtype: int) -> Iterator[np.ndarray]:
    """quantize() a block of rows at a time: uint8 [rows, row_bytes(qtype, K)] per block. `w` may
    also be anything with a 2-D `shape` whose row slices are arrays (a checkpoint's RowReader),
    so a tensor is never whole in memory, in floats or encoded."""
    if len(w.shape) != 2:
        raise FormatError(f"expected a 2-D weight matrix, got shape {w.shape}")
    m, k = w.shape
    rb = row_bytes(qtype, k)
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
        elif qtype == Q4K:
            enc = _quantize_q4k(chunk)
        elif qtype == MXFP4:
            enc = mxfp4.quantize_rows(chunk)
        else:
            enc = _quantize_low_bit(chunk, qtype)
        yield np.ascontiguousarray(enc).view(np.uint8).reshape(r1 - r0, rb)


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
        elif qtype == Q4K:
            out[r0:r1] = _dequantize_q4k(part.view(_BLOCK_Q4K))
        elif qtype == MXFP4:
            out[r0:r1] = mxfp4.dequantize_blocks(part.view(mxfp4.BLOCK))
        else:
            b = part.view(_BLOCKS[qtype])
            d = b["d"].astype(np.float32)[..., None]
            mm = b["m"].astype(np.float32)[..., None]
            out[r0:r1] = (d * codes(b, qtype).astype(np.float32) + mm).reshape(r1 - r0, k)
    return out
