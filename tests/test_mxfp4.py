"""The mxfp4 weight type against llama.cpp's own definition (gguf-py's MXFP4, the Python twin
of ggml's block_mxfp4) and the Hugging Face checkpoints' nibble order."""
import numpy as np
import pytest

from edgemoe import _core
from edgemoe.format import mxfp4
from edgemoe.format import quant as Q

gguf_quants = pytest.importorskip("gguf.quants", reason="the gguf package is not installed")


def every_block() -> np.ndarray:
    """Blocks with every exponent (0..255) and every code in every nibble position."""
    rng = np.random.default_rng(0)
    out = np.empty(256 * 4, dtype=mxfp4.BLOCK)
    out["e"] = np.repeat(np.arange(256, dtype=np.uint8), 4)
    codes = np.tile(np.arange(16, dtype=np.uint8), 2)
    for i in range(len(out)):
        c = rng.permutation(codes)
        out["qs"][i] = c[:16] | (c[16:] << 4)
    return out


def test_every_block_decodes_to_llama_cpps_values():
    blocks = every_block()
    with np.errstate(over="ignore"):  # 6 * 2^128 is infinite for both
        theirs = gguf_quants.MXFP4.dequantize_blocks(blocks.view(np.uint8).reshape(len(blocks), 17)).reshape(-1)
    ours = mxfp4.dequantize_blocks(blocks[None])[0]
    runtime = np.asarray(_core.dequantize_row(Q.MXFP4, blocks.view(np.uint8).reshape(-1), len(blocks) * 32))
    assert np.array_equal(ours, theirs) and np.array_equal(runtime, theirs)


def test_the_quantizer_chooses_llama_cpps_blocks():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 256)).astype(np.float32) * np.exp(rng.uniform(-8, 8, (64, 1))).astype(np.float32)
    w[3, :32] = 0  # an all-zero block
    w[5, 40] = 1e3  # an outlier that sets its block's exponent
    ours = Q.quantize(w, Q.MXFP4)
    theirs = gguf_quants.MXFP4.quantize_blocks(w.reshape(-1, 32)).reshape(-1)
    assert np.array_equal(ours, theirs)
    # and decodes within half a step of the E2M1 grid at the block's scale (6 is the largest value)
    back = Q.dequantize(ours, Q.MXFP4, w.shape)
    step = 2.0 ** np.floor(np.log2(np.abs(w.reshape(64, 8, 32)).max(-1, keepdims=True) + 1e-30)) / 4
    assert np.all(np.abs(back - w).reshape(64, 8, 32) <= step * 2 + 1e-30)


def test_hugging_face_blocks_regroup_losslessly():
    # HF pairs neighbours in a byte (element 2i low nibble, 2i + 1 high); we keep j and j + 16.
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 16, (3, 5, 32), dtype=np.uint8)
    hf_blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    scales = rng.integers(100, 140, (3, 5), dtype=np.uint8)
    ours = mxfp4.from_hf(hf_blocks, scales)
    assert np.array_equal(mxfp4.codes(ours), codes) and np.array_equal(ours["e"], scales)
    expected = mxfp4.VALUES[codes] * np.ldexp(1.0, scales.astype(int) - 127)[..., None]
    assert np.array_equal(mxfp4.dequantize_blocks(ours), expected.reshape(3, 5 * 32).astype(np.float32))
