"""q4k: llama.cpp's Q4_K layout. Decoding is checked against the gguf package's own Q4_K
decoder (an independent implementation of the same bytes), the encoder against q4 and Q4_0."""
import numpy as np
import pytest

from edgemoe import _core
from edgemoe.format import quant as Q
from edgemoe.errors import FormatError

gguf_quants = pytest.importorskip("gguf.quants")
from gguf import GGMLQuantizationType  # noqa: E402


def gguf_decode(buf, shape):
    return gguf_quants.dequantize(np.asarray(buf).reshape(shape[0], -1), GGMLQuantizationType.Q4_K).reshape(shape)


def random_blocks(n, seed):
    """Arbitrary bytes with finite fp16 heads: every scale/minimum bit pattern occurs."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(n, 144), dtype=np.uint8)
    raw[:, 0:2] = np.abs(rng.standard_normal(n) * 0.01).astype("<f2").view(np.uint8).reshape(n, 2)
    raw[:, 2:4] = np.abs(rng.standard_normal(n) * 0.01).astype("<f2").view(np.uint8).reshape(n, 2)
    return raw


def test_arbitrary_blocks_decode_as_gguf_decodes_them():
    raw = random_blocks(64, seed=1)  # 64 rows of one block
    want = gguf_decode(raw, (64, 256))
    assert np.array_equal(Q.dequantize(raw.reshape(-1), Q.Q4K, (64, 256)), want)
    for r in range(64):
        # float32 in both; the C++ may fuse d * sc * q - dmin * mn differently: a few ulps
        np.testing.assert_allclose(_core.dequantize_row(Q.Q4K, raw[r], 256), want[r], rtol=0, atol=1e-6 * np.abs(want[r]).max())


def test_hand_built_scales_of_the_upper_groups():
    # Group 5: scale 0b110101 = 53, minimum 0b101110 = 46. Its low 4 bits sit in byte 9,
    # its top 2 bits in the top bits of byte 1 (scale) and byte 5 (minimum).
    raw = np.zeros(144, np.uint8)
    raw[0:2] = np.array([1.0], "<f2").view(np.uint8)
    raw[2:4] = np.array([0.5], "<f2").view(np.uint8)
    scales = raw[4:16]  # a view: writes land in the block
    scales[9] = (53 & 0x0F) | ((46 & 0x0F) << 4)
    scales[1] = (53 >> 4) << 6  # the low 6 bits are group 1's scale (0 here)
    scales[5] = (46 >> 4) << 6  # ...and group 1's minimum
    raw[16 + 2 * 32: 16 + 3 * 32] = 0x70  # groups 4 (low nibbles, 0) and 5 (high nibbles, 7)
    got = Q.dequantize(raw, Q.Q4K, (1, 256))[0]
    assert np.all(got[5 * 32: 6 * 32] == 53 * 7 - 0.5 * 46)
    assert np.all(got[4 * 32: 5 * 32] == 0.0)  # group 4: scale and minimum 0
    assert np.array_equal(got, gguf_decode(raw, (1, 256))[0])
    sc, mn = Q.scales_q4k(raw.view(Q._BLOCK_Q4K))
    assert list(sc[0]) == [0, 0, 0, 0, 0, 53, 0, 0] and list(mn[0]) == [0, 0, 0, 0, 0, 46, 0, 0]


@pytest.mark.parametrize("kind", ["gauss", "heavy", "lopsided"])
def test_encoder_beats_q4_and_q4_0_on_typical_weights(kind):
    rng = np.random.default_rng(3)
    w = {"gauss": rng.standard_normal((128, 1024)),
         "heavy": rng.standard_t(3, (128, 1024)),
         "lopsided": rng.standard_normal((128, 1024)) + 0.5}[kind].astype(np.float32) * 0.02
    buf = Q.quantize(w, Q.Q4K)
    assert buf.size == 128 * 1024 // 256 * 144
    back = Q.dequantize(buf, Q.Q4K, w.shape)
    assert np.array_equal(back, gguf_decode(buf, w.shape))

    def rel(a):
        return np.sqrt(((a - w) ** 2).mean() / (w ** 2).mean())

    q4 = rel(Q.dequantize(Q.quantize(w, Q.Q4), Q.Q4, w.shape))
    q4_0 = rel(gguf_quants.dequantize(gguf_quants.quantize(w, GGMLQuantizationType.Q4_0),
                                      GGMLQuantizationType.Q4_0))
    # Measured (Gaussian): 0.072 vs q4 0.078 vs Q4_0 0.086; the 6-bit scales cost less than the
    # least-squares fit and the choice of their rounding gain.
    assert rel(back) < min(q4, q4_0), (rel(back), q4, q4_0)


def test_every_element_within_its_groups_step():
    # However the 6-bit scale was rounded, no element is further from its decoded value
    # than one step of its group (half a step from rounding, the rest from a lower scale).
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((32, 512)) * 0.02).astype(np.float32)
    w[3, :40] += 0.3  # a lopsided group and super-block
    buf = Q.quantize(w, Q.Q4K)
    b = buf.reshape(32, 2, 144).copy().view(Q._BLOCK_Q4K)[..., 0]
    sc, _ = Q.scales_q4k(b)
    step = b["d"].astype(np.float32)[..., None] * sc  # [rows, super, 8]
    err = np.abs(Q.dequantize(buf, Q.Q4K, w.shape) - w).reshape(32, 2, 8, 32).max(-1)
    assert np.all(err <= step * 1.0 + 1e-7)


def test_row_lengths_and_fallback():
    with pytest.raises(FormatError, match="multiple of 256"):
        Q.quantize(np.zeros((1, 288), np.float32), Q.Q4K)
    with pytest.raises(FormatError):
        _core.row_bytes(Q.Q4K, 288)
    assert Q.storable_type(Q.Q4K, (1024, 512)) == Q.Q4K
    assert Q.storable_type(Q.Q4K, (1024, 1408)) == Q.Q4  # e.g. Qwen1.5-MoE's expert width
    assert Q.storable_type(Q.Q4K, (1024, 100)) == Q.F16
    assert Q.storable_type(Q.Q8, (1024, 100)) == Q.F16


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """synthetic(intermediate) -> a small random OLMoE-shaped checkpoint whose rows are multiples
    of 256 (bench/make_synthetic.py), so its experts can take q4k."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    made = {}

    def get(intermediate):
        if intermediate not in made:
            out = tmp_path_factory.mktemp(f"synth{intermediate}")
            subprocess.run([sys.executable, str(root / "bench" / "make_synthetic.py"), str(out), "--layers", "2",
                            "--experts", "4", "--top-k", "2", "--hidden", "256", "--intermediate", str(intermediate),
                            "--heads", "4", "--dtype", "f32"], check=True, capture_output=True)
            made[intermediate] = out
        return made[intermediate]
    return get


def test_q4k_model_is_closer_to_f32_than_q4(synthetic, tmp_path):
    import edgemoe
    from edgemoe.format.container import open_container
    from edgemoe.convert import convert_hf

    src = str(synthetic(512))
    ids = np.random.default_rng(0).integers(0, 384, 48).tolist()
    logits, sizes = {}, {}
    for bits in ("f32", "4", "4k"):
        out = tmp_path / f"m-{bits}.emoe"
        convert_hf(src, str(out), bits=bits, progress=False)
        c = open_container(out)
        assert {b["type"] for row in c.experts for b in row} == {{"f32": "f32", "4": "q4", "4k": "q4k"}[bits]}
        sizes[bits] = sum(b["size"] for row in c.experts for b in row)
        logits[bits] = edgemoe.load(str(out), threads=1, kv_cache="f32").logits(ids)
    assert sizes["4k"] == sizes["4"] * 18 // 20  # 4.5 vs 5 bits per weight

    def err(bits):  # median over positions of the max relative logit error
        d = np.abs(logits[bits] - logits["f32"]).max(-1) / np.abs(logits["f32"]).max(-1)
        return float(np.median(d))
    # The same bound test_parity.py puts on q4 (0.3); q4k's weights are more accurate, so its
    # logits should not be further from f32 than q4's (random weights: allow 20 % noise).
    print(f"median max relative logit error: q4k {err('4k'):.4f}, q4 {err('4'):.4f}")
    assert err("4k") < 0.3 and err("4k") < 1.2 * err("4"), (err("4k"), err("4"))
    # ... and it is not simply q4 again
    assert not np.array_equal(logits["4k"], logits["4"])


def test_experts_whose_rows_are_not_multiples_of_256_fall_back_to_q4(synthetic, tmp_path):
    import edgemoe
    from edgemoe.format.container import open_container
    from edgemoe.convert import convert_hf

    out = tmp_path / "m.emoe"
    convert_hf(str(synthetic(288)), str(out), bits="4k", resident_bits="4k", progress=False)
    c = open_container(out)
    assert {b["type"] for row in c.experts for b in row} == {"q4"}  # down rows are 288 long
    assert "q4k" in {t["type"] for t in c.tensors.values()}  # the 256-wide matrices do take it
    assert np.isfinite(edgemoe.load(str(out), threads=1).logits([1, 2, 3])).all()
