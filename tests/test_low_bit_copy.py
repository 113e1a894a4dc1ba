"""Low-bit copies of the experts (`convert --low-bit-copy`) and the lossy run-time option that
reads them instead of missed experts (`low_bit_missed_below`).

A copy as wide as the experts themselves holds the same bytes, so reading it must compute
exactly what the experts do: that checks the whole path (the second table, the store's ids past
n_experts, the copy's own type, an expert's biases) without any quantization error to hide in.
Narrower copies are then checked for what they promise: fewer bytes read, labelled as lossy,
and within the copy's quantization error of the lossless model."""
import os

import numpy as np
import pytest

import edgemoe
from edgemoe.format import quant
from edgemoe.format.container import open_container
from edgemoe.format.model_config import moe_layers

from conftest import FIXTURES
from container_edit import replace_tables


def _convert(tmp_path, name, bits, low_bit_copy, **kw):
    from edgemoe.convert import convert_hf

    path = str(tmp_path / f"{name}-{bits}-low{low_bit_copy}.emoe")
    convert_hf(str(FIXTURES / name), path, bits=bits, progress=False, low_bit_copy=low_bit_copy, **kw)
    return path


def _slots(path) -> int:
    return open_container(path).config["top_k"] + 1


@pytest.mark.parametrize("name", ["qwen3_moe", "gpt_oss"])  # gpt_oss: expert biases, which a copy shares
def test_a_copy_as_wide_as_the_experts_computes_exactly_what_they_do(tmp_path, name):
    path = _convert(tmp_path, name, "4", "4")
    c = open_container(path)
    assert c.manifest["quantization"]["low_bit_copy"] == "q4"
    for row, low_row in zip(c.experts, c.low_bit_experts):
        for full, low in zip(row, low_row):
            assert low["type"] == full["type"] and low["size"] == full["size"] and low["crc32"] == full["crc32"]
            assert low["offset"] != full["offset"]
    ids = np.random.default_rng(3).integers(0, 300, 12).tolist()
    exact = edgemoe.load(path, threads=2, cache_experts=_slots(path))
    want = np.stack([exact.eval(ids[:8])] + [exact.eval([t]) for t in ids[8:]])
    with pytest.warns(UserWarning, match="LOSSY: low_bit_missed_below=1"):
        copies = edgemoe.load(path, threads=2, cache_experts=_slots(path), low_bit_missed_below=1.0)
    got = np.stack([copies.eval(ids[:8])] + [copies.eval([t]) for t in ids[8:]])
    assert copies.stats()["low_bit_choices"] > 0
    assert np.array_equal(got, want)  # the same bytes, read under other ids: bit for bit


def test_narrow_copies_read_fewer_bytes_are_labelled_and_compute_the_narrow_model(tmp_path):
    path = _convert(tmp_path, "qwen3_moe", "8", "2")
    narrow = _convert(tmp_path, "qwen3_moe", "2", None)  # every expert at the copies' width
    ids = np.random.default_rng(4).integers(0, 300, 16).tolist()
    slots = _slots(path)
    exact = edgemoe.load(path, threads=2, cache_experts=slots)
    want = exact.logits(ids)
    assert np.array_equal(edgemoe.load(path, threads=2, cache_experts=slots, low_bit_missed_below=0.0).logits(ids),
                          want)  # off: the copies are never read
    with pytest.warns(UserWarning, match="LOSSY"):
        lossy = edgemoe.load(path, threads=2, cache_experts=slots, low_bit_missed_below=1.0)
    # One pass over a fresh cache: no expert of a layer is cached when the layer starts, so every
    # choice is computed from its copy, which is what the all-2-bit conversion computes.
    got = lossy.logits(ids)
    assert np.array_equal(got, edgemoe.load(narrow, threads=2, cache_experts=slots).logits(ids))
    assert not np.array_equal(got, want)
    s = lossy.stats()
    assert s["low_bit_choices"] == len(ids) * lossy.config["top_k"] * len(moe_layers(lossy.config))
    assert s["skipped_choices"] == 0
    assert s["bytes_read"] < 0.6 * exact.stats()["bytes_read"]  # 2-bit copies of 8-bit experts: 3.0 of 8.5 bits
    assert lossy.info()["lossy"] == {"low_bit_missed_below": 1.0}
    assert lossy._engine.allocated_bytes == lossy.plan.total_bytes == exact.plan.total_bytes  # copies fit the slots
    # a share: only the misses every token gives little weight are read in their copies
    with pytest.warns(UserWarning, match="LOSSY"):
        some = edgemoe.load(path, threads=2, cache_experts=slots, low_bit_missed_below=0.3)
    some.logits(ids)
    assert 0 < some.stats()["low_bit_choices"] < s["low_bit_choices"]


def test_the_option_needs_copies_and_a_share(converted):
    path = converted("qwen3_moe", "8")
    assert open_container(path).low_bit_experts is None
    with pytest.raises(ValueError, match="low-bit copies.*--low-bit-copy"):
        edgemoe.load(path, low_bit_missed_below=0.5)
    with pytest.raises(ValueError, match="low_bit_missed_below"):
        edgemoe.load(path, low_bit_missed_below=1.5)


def test_an_existing_container_gets_copies_of_its_own_experts(tmp_path, converted):
    from edgemoe.convert.low_bit_copy import add_low_bit_copies

    src = converted("qwen3_moe", "8")
    out = str(tmp_path / "with-copies.emoe")
    add_low_bit_copies(src, out, "2", progress=False)
    a, b = open_container(src), open_container(out)
    assert b.manifest["quantization"] == dict(a.manifest["quantization"], low_bit_copy="q2")
    assert b.manifest["tokenizer"] == a.manifest["tokenizer"]
    ids = [5, 17, 3, 99, 42]
    assert np.array_equal(edgemoe.load(out, threads=2).logits(ids), edgemoe.load(src, threads=2).logits(ids))
    with open(src, "rb") as fa, open(out, "rb") as fb:
        for row_a, row_b, low_row in zip(a.experts, b.experts, b.low_bit_experts):
            for x, y, low in zip(row_a, row_b, low_row):
                fa.seek(x["offset"]), fb.seek(y["offset"])
                assert fa.read(x["size"]) == fb.read(y["size"])  # carried over byte for byte
                assert low["type"] == "q2"
                fb.seek(low["offset"])
                payload = fb.read(low["size"])
                for part in ("gate", "up", "down"):
                    p, q = x["parts"][part], low["parts"][part]
                    fa.seek(x["offset"] + p["offset"])
                    w = quant.dequantize(np.frombuffer(fa.read(p["nbytes"]), np.uint8), quant.Q8, p["shape"])
                    copy = np.frombuffer(payload, np.uint8, q["nbytes"], q["offset"])
                    assert np.array_equal(copy, quant.quantize(w, quant.Q2).reshape(-1))
    with pytest.raises(edgemoe.FormatError, match="new file"):
        add_low_bit_copies(out, out, "2", progress=False)
    # a corrupt source does not become a valid container with copies of the corruption
    import shutil

    bad = str(tmp_path / "bad.emoe")
    shutil.copy(src, bad)
    blob = a.experts[0][1]
    with open(bad, "r+b") as f:
        f.seek(blob["offset"] + 100)
        byte = f.read(1)
        f.seek(blob["offset"] + 100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(edgemoe.FormatError, match="checksum mismatch"):
        add_low_bit_copies(bad, str(tmp_path / "from-bad.emoe"), "2", progress=False)
    assert not os.path.exists(tmp_path / "from-bad.emoe")
    with pytest.raises(edgemoe.FormatError, match="low-bit copy width"):
        add_low_bit_copies(src, str(tmp_path / "x.emoe"), "8", progress=False)


def test_the_cli_converts_and_runs_with_copies(tmp_path, converted, capsys):
    from edgemoe.apps.cli import main

    src = converted("qwen3_moe", "8")
    out = str(tmp_path / "cli.emoe")
    assert main(["convert", src, "-o", out, "--low-bit-copy", "2", "-q"]) == 0
    assert main(["convert", src, "-o", str(tmp_path / "y.emoe"), "-q"]) != 0
    assert "low-bit copies of its experts" in capsys.readouterr().err
    assert main(["info", out]) == 0
    assert "low-bit copies" in capsys.readouterr().out
    assert main(["generate", out, "-p", "hello", "-n", "4", "--cache-experts", "9", "--low-bit-missed-below", "1",
                 "--stats", "--threads", "2"]) == 0
    err = capsys.readouterr().err
    assert "LOSSY: low_bit_missed_below=1" in err and "expert choices from low-bit copies" in err


def test_a_copy_outside_the_expert_section_is_refused(tmp_path):
    path = _convert(tmp_path, "qwen3_moe", "8", "2")
    c = open_container(path)
    low = [[dict(b) for b in row] for row in c.low_bit_experts]
    low[0][0]["offset"] = c.sections["experts"]["offset"] + c.sections["experts"]["size"]
    replace_tables(path, low_bit_experts=low)
    with pytest.raises(edgemoe.FormatError, match="low-bit copy of expert 0/0 lies outside the expert section"):
        edgemoe.load(path)
