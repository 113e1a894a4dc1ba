"""Getting a model in: Hugging Face repository ids (through huggingface_hub's cache, offline
here) and split GGUF files, each converting to exactly what the local file or folder gives."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import edgemoe
from edgemoe.convert.gguf import convert_gguf, split_parts
from edgemoe.convert.hub import parse_repo_id
from edgemoe.format.container import open_container

from conftest import FIXTURES, hub_cache_entry

GGUF = FIXTURES / "gguf" / "qwen3_moe-q8_0.gguf"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_split(src, stem, max_tensors: int) -> str:
    """src re-written as a split model the way llama.cpp's gguf-split names and tags it (gguf-py's
    writer: split.no / split.count / split.tensors.count, metadata in the first part). Returns the
    first part."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(stem) + ".gguf", reader.fields["general.architecture"].contents(),
                             split_max_tensors=max_tensors)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    parts = sorted(p for p in os.listdir(os.path.dirname(str(stem))) if p.startswith(os.path.basename(str(stem))))
    assert len(parts) > 1 and parts[0].endswith("-00001-of-%05d.gguf" % len(parts)), parts
    return os.path.join(os.path.dirname(str(stem)), parts[0])


def _same_model(a: str, b: str) -> None:
    ids = [3, 17, 42, 5, 99, 7]
    np.testing.assert_array_equal(edgemoe.load(a, threads=2).logits(ids), edgemoe.load(b, threads=2).logits(ids))
    ca, cb = open_container(a), open_container(b)
    assert [[x["crc32"] for x in row] for row in ca.experts] == [[x["crc32"] for x in row] for row in cb.experts]
    assert ca.sections["resident"]["crc32"] == cb.sections["resident"]["crc32"]


def test_a_split_gguf_converts_like_the_whole_file(tmp_path):
    first = write_split(GGUF, tmp_path / "model", max_tensors=7)
    parts = split_parts(first)
    assert len(parts) == 4 and parts[0] == first
    whole, split = str(tmp_path / "whole.emoe"), str(tmp_path / "split.emoe")
    convert_gguf(str(GGUF), whole, bits="8", progress=False)
    convert_gguf(first, split, bits="8", progress=False)
    _same_model(whole, split)


def test_a_split_gguf_with_a_part_missing_or_out_of_place_is_refused(tmp_path):
    first = write_split(GGUF, tmp_path / "model", max_tensors=7)
    parts = split_parts(first)
    with pytest.raises(edgemoe.FormatError, match="give its first part"):
        convert_gguf(parts[1], str(tmp_path / "x.emoe"), progress=False)
    os.replace(parts[1], parts[1] + ".bak")
    with pytest.raises(edgemoe.FormatError, match="lacks 1 of its 4 parts"):
        convert_gguf(first, str(tmp_path / "x.emoe"), progress=False)
    os.replace(parts[1] + ".bak", parts[1])
    os.replace(parts[1], tmp_path / "moved.gguf")
    shutil.copy(parts[2], parts[1])  # part 3's bytes under part 2's name
    with pytest.raises(edgemoe.FormatError, match="split.no metadata does not say part 2 of 4"):
        convert_gguf(first, str(tmp_path / "x.emoe"), progress=False)
    renamed = str(tmp_path / "renamed.gguf")  # the first part alone, its name no longer saying so
    shutil.copy(first, renamed)
    with pytest.raises(edgemoe.FormatError, match="split into 4 parts"):
        convert_gguf(renamed, str(tmp_path / "x.emoe"), progress=False)
    assert not os.path.exists(tmp_path / "x.emoe")


def test_repo_ids_are_told_from_paths(tmp_path):
    assert parse_repo_id("Qwen/Qwen3-30B-A3B") == ("Qwen/Qwen3-30B-A3B", None, None)
    assert parse_repo_id("unsloth/Qwen3-30B-A3B-GGUF:Q4_K_M") == ("unsloth/Qwen3-30B-A3B-GGUF", None, "Q4_K_M")
    assert parse_repo_id("org/model@v1.0") == ("org/model", "v1.0", None)
    for path in ("./org/model", "/models/x", "model.gguf", "a/b/c", "x.emoe", str(tmp_path)):
        assert parse_repo_id(path) is None


def _convert(args, cache):
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "edgemoe", "convert", *args, "-q"], capture_output=True, text=True,
                          env=env, timeout=300)


def test_repo_ids_convert_from_the_hugging_face_cache_offline(tmp_path, converted):
    cache = tmp_path / "hub"
    hub_cache_entry(cache, "test-org/tiny-qwen3", [p for p in (FIXTURES / "qwen3_moe").iterdir() if p.is_file()])
    first = write_split(GGUF, tmp_path / "tiny-Q8_0", max_tensors=9)
    hub_cache_entry(cache, "test-org/tiny-qwen3-GGUF", split_parts(first) + [str(FIXTURES / "gguf" / "qwen3_moe-q4_0.gguf")])

    out = str(tmp_path / "from-repo.emoe")
    r = _convert(["test-org/tiny-qwen3", "-o", out, "--bits", "8"], cache)
    assert r.returncode == 0, r.stderr
    _same_model(out, converted("qwen3_moe", "8"))

    out = str(tmp_path / "from-gguf-repo.emoe")
    r = _convert(["test-org/tiny-qwen3-GGUF:q8_0", "-o", out, "--bits", "8"], cache)  # tags match in any case
    assert r.returncode == 0, r.stderr
    local = str(tmp_path / "local.emoe")
    convert_gguf(str(GGUF), local, bits="8", progress=False)
    _same_model(out, local)

    r = _convert(["test-org/tiny-qwen3-GGUF", "-o", str(tmp_path / "x.emoe")], cache)
    assert r.returncode != 0 and "name a quantization, e.g. test-org/tiny-qwen3-GGUF:Q4_K_M" in r.stderr
    r = _convert(["test-org/tiny-qwen3-GGUF:Q2_K", "-o", str(tmp_path / "x.emoe")], cache)
    assert r.returncode != 0 and "no GGUF file of quantization Q2_K" in r.stderr
    r = _convert(["test-org/not-cached", "-o", str(tmp_path / "x.emoe")], cache)
    assert r.returncode != 0 and "not in the local Hugging Face cache" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "x.emoe")
