"""MXFP4 (OCP microscaling FP4, as gpt-oss ships its experts), byte-compatible with
csrc/common/qtypes.h's BlockMXFP4 and llama.cpp's block_mxfp4.

A block of 32 weights is 17 bytes (4.25 bits per weight): an E8M0 exponent ``e`` (the block
scale is ``2**(e - 127)``), then 16 bytes of E2M1 codes, element ``j`` in the low nibble of byte
``j`` and element ``j + 16`` in the high nibble. A code's value is ``VALUES[code]``.

Hugging Face checkpoints store the same codes as ``<name>_blocks`` [..., n_blocks, 16] and the
exponents as ``<name>_scales`` [..., n_blocks], with neighbours paired in a byte (element
``2i`` low, ``2i + 1`` high): :func:`from_hf` regroups the nibbles and keeps every bit.
"""
from __future__ import annotations

import numpy as np

GROUP = 32
BLOCK = np.dtype([("e", "u1"), ("qs", "u1", (GROUP // 2,))])
VALUES = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32)
# The values doubled, so they are integers; decoding multiplies them by half the scale, which
# (unlike the scale) is a finite float32 for every exponent: 2**128 is not, 2**127 is.
DOUBLED = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.float32)


def half_scale(e: np.ndarray) -> np.ndarray:
    """2**(e - 128) as float32, from its bits (subnormal for e < 2), as the runtime computes it."""
    e = e.astype(np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - np.uint32(1)) << np.uint32(23)).astype(np.uint32)
    return bits.view(np.float32)


def codes(b: np.ndarray) -> np.ndarray:
    """[..., 32] codes of blocks b in element order."""
    return np.concatenate([b["qs"] & 0x0F, b["qs"] >> 4], axis=-1)


def dequantize_blocks(b: np.ndarray) -> np.ndarray:
    """[..., n] blocks -> [..., n * 32] floats."""
    with np.errstate(over="ignore"):  # the top exponents times 6 are infinite, in llama.cpp too
        y = DOUBLED[codes(b)] * half_scale(b["e"])[..., None]
    return y.reshape(*b.shape[:-1], b.shape[-1] * GROUP)


def quantize_rows(w: np.ndarray) -> np.ndarray:
    """[m, k] floats -> [m, k / 32] blocks, as llama.cpp's reference quantizer chooses them: the
    exponent puts the group's largest magnitude in [4, 8) (so up to 6 is representable and larger
    values clip to 6), each value then rounded to the nearest code (ties to the lower code)."""
    m, k = w.shape
    g = w.reshape(m, k // GROUP, GROUP).astype(np.float32)
    amax = np.abs(g).max(-1)
    with np.errstate(divide="ignore"):
        e = np.where(amax > 0, np.floor(np.log2(np.where(amax > 0, amax, 1))) - 2 + 127, 0)
    e = np.clip(e, 0, 254).astype(np.uint8)
    x = g / (2 * half_scale(e))[..., None]
    c = np.abs(np.abs(x)[..., None] - VALUES[:8]).argmin(-1).astype(np.uint8)  # nearest magnitude
    c = np.where((x < 0) & (c > 0), c + 8, c).astype(np.uint8)
    out = np.empty((m, k // GROUP), dtype=BLOCK)
    out["e"] = e
    out["qs"] = c[..., : GROUP // 2] | (c[..., GROUP // 2:] << 4)
    return out


def from_hf(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Hugging Face's ``_blocks`` [..., n, 16] and ``_scales`` [..., n] (uint8) as our blocks
    [..., n]: the same exponents and codes, the nibbles regrouped."""
    lo, hi = blocks & 0x0F, blocks >> 4
    c = np.stack([lo, hi], axis=-1).reshape(*blocks.shape[:-1], GROUP)  # element order
    out = np.empty(blocks.shape[:-1], dtype=BLOCK)
    out["e"] = scales
    out["qs"] = c[..., : GROUP // 2] | (c[..., GROUP // 2:] << 4)
    return out
