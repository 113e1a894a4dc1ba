"""zstd-compressed expert blobs (convert --compress zstd): same results, clear errors."""
import shutil

import numpy as np
import pytest

import edgemoe
from edgemoe import _core
from edgemoe.format import container
from edgemoe.format.container import open_container
from edgemoe.convert import convert_hf
from edgemoe.errors import FormatError, StorageError
from conftest import FIXTURES, decode_logits, reference
from container_edit import replace_tables


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("zstd")
    raw, packed = str(d / "raw.emoe"), str(d / "zstd.emoe")
    convert_hf(str(FIXTURES / "mixtral_smooth"), raw, bits="2", progress=False)
    convert_hf(str(FIXTURES / "mixtral_smooth"), packed, bits="2", progress=False, compress="zstd")
    return raw, packed


# A build without libzstd must refuse compressed containers clearly; with it, read them.
needs_zstd = pytest.mark.skipif(not _core.zstd_supported(), reason="this build has no zstd (libzstd-dev)")


def test_build_without_zstd_refuses_clearly(pair):
    if _core.zstd_supported():
        assert edgemoe.load(pair[1]) is not None
    else:
        with pytest.raises(FormatError, match="no zstd support"):
            edgemoe.load(pair[1])


def test_compressed_blobs_are_smaller_and_recorded(pair):
    raw, packed = pair
    blobs = [b for row in open_container(packed).experts for b in row]
    assert all(b["compression"] == "zstd" and 0 < b["stored"] < b["size"] for b in blobs)
    assert open_container(packed).manifest["quantization"]["compression"] == "zstd"
    assert sum(b["stored"] for b in blobs) < sum(b["size"] for b in blobs)


@needs_zstd
@pytest.mark.parametrize("predictor,slots", [("none", 2), ("none", 16), ("gate", 3)])
def test_results_identical_to_raw_blobs(pair, predictor, slots):
    raw, packed = pair
    ids = reference("mixtral_smooth")["input_ids"].tolist()
    a = edgemoe.load(raw, cache_experts=slots, predictor=predictor, prefetch_min_confidence=0.0)
    b = edgemoe.load(packed, cache_experts=slots, predictor=predictor, prefetch_min_confidence=0.0)
    np.testing.assert_array_equal(a.logits(ids), b.logits(ids))
    np.testing.assert_array_equal(decode_logits(a, ids), decode_logits(b, ids))


def corrupt_first_blob(src, dst):
    shutil.copyfile(src, dst)
    blob = open_container(dst).experts[0][0]
    with open(dst, "r+b") as f:
        f.seek(blob["offset"] + blob["stored"] // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))


@needs_zstd
@pytest.mark.parametrize("verify", [True, False])
def test_corrupt_compressed_blob_is_a_storage_error(pair, tmp_path, verify):
    bad = str(tmp_path / "bad.emoe")
    corrupt_first_blob(pair[1], bad)
    model = edgemoe.load(bad, cache_experts=16, verify_checksums=verify)
    ids = reference("mixtral_smooth")["input_ids"].tolist()
    # checksum mismatch (verify on) or the zstd frame's own checksum / structure (verify off)
    with pytest.raises(StorageError, match="checksum|decompress"):
        for _ in range(3):  # expert 0/0 is used by some token
            model.logits(ids)


@needs_zstd
def test_hostile_compression_fields_are_refused(pair, tmp_path, monkeypatch):
    monkeypatch.setitem(container._COMPRESSION, "lz4", 7)  # a code the format does not define
    for change, message in (({"compression": "lz4"}, "unknown compression 7"),
                            ({"stored": 10**12}, "outside the expert section"),
                            ({"stored": 0}, "bad stored size for its compression"),
                            ({"compression": "none"}, "bad stored size for its compression")):
        path = tmp_path / "h.emoe"
        shutil.copyfile(pair[1], path)
        experts = open_container(path).experts
        assert experts[0][0]["compression"] == "zstd"
        experts[0][0] = dict(experts[0][0], **change)
        replace_tables(path, experts=experts)
        with pytest.raises(FormatError, match=message):
            edgemoe.load(str(path))


@needs_zstd
@pytest.mark.parametrize("magic,trailing", [(0xFD2FB527, b""),   # a legacy (v0.7) zstd frame
                                            (0x184D2A50, b""),   # a skippable frame
                                            (0xFD2FB528, b"\0")])  # a frame followed by other bytes
def test_only_a_single_standard_zstd_frame_is_decoded(pair, tmp_path, magic, trailing):
    # With checksums off the stored bytes reach the decoder as they are; libzstd would also run its
    # legacy and skippable-frame decoders on them, which the converter never writes.
    path = str(tmp_path / "odd.emoe")
    shutil.copyfile(pair[1], path)
    experts = open_container(path).experts
    blobs = [b for row in experts for b in row]
    blob = blobs[0]
    with open(path, "r+b") as f:
        f.seek(blob["offset"])
        f.write(magic.to_bytes(4, "little"))
        f.seek(blob["offset"] + blob["stored"])
        f.write(trailing)
    if trailing:  # the blob now claims the extra byte (blobs are 4096-aligned, so it is padding)
        assert blob["offset"] + blob["stored"] + 1 <= min(b["offset"] for b in blobs if b["offset"] > blob["offset"])
        experts[0][0] = dict(blob, stored=blob["stored"] + 1)
        replace_tables(path, experts=experts)
    model = edgemoe.load(path, cache_experts=len(blobs), verify_checksums=False)
    with pytest.raises(StorageError, match="expert 0/0 is not a single zstd frame"):
        for _ in range(3):  # expert 0/0 is used by some token
            model.logits(reference("mixtral_smooth")["input_ids"].tolist())
