"""Every bad input gets the package's own exception with a message that says what is wrong."""
import json
import os
import re
import shutil
import struct

import pytest

import edgemoe
from edgemoe.format.container import open_container
from edgemoe.convert import convert_hf
from conftest import FIXTURES, reference
from container_edit import replace_tables


def copy_of(path, tmp_path, name="copy.emoe"):
    dst = tmp_path / name
    shutil.copyfile(path, dst)
    return dst


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_missing_file(tmp_path):
    with pytest.raises(edgemoe.FormatError, match="no such model file"):
        edgemoe.load(tmp_path / "nope.emoe")


def test_directory_instead_of_container(tmp_path):
    with pytest.raises(edgemoe.FormatError, match="is a directory; convert it first"):
        edgemoe.load(tmp_path)


def test_wrong_magic(tmp_path):
    p = tmp_path / "x.emoe"
    p.write_bytes(b"GGUF" + b"\0" * 8192)
    with pytest.raises(edgemoe.FormatError, match="not an EdgeMoE container"):
        edgemoe.load(p)


@pytest.mark.parametrize("version,message", [
    (99, "format version 99 is not supported"),
    (1, "format version 1 was written by an older edgemoe; re-convert"),  # its tables were JSON
])
def test_other_format_versions_are_refused_with_what_to_do(converted, tmp_path, version, message):
    p = copy_of(converted("qwen3_moe", "8"), tmp_path)
    with open(p, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", version))
    with pytest.raises(edgemoe.FormatError, match=message):
        edgemoe.load(p)


def test_header_corruption_detected(converted, tmp_path):
    p = copy_of(converted("qwen3_moe", "8"), tmp_path)
    with open(p, "r+b") as f:
        f.seek(20)
        f.write(b"\x01")
    with pytest.raises(edgemoe.FormatError, match="header checksum mismatch"):
        edgemoe.load(p)


@pytest.mark.parametrize("keep_fraction", [0.0, 0.3, 0.7, 0.999])
def test_truncated_file(converted, tmp_path, keep_fraction):
    src = converted("qwen3_moe", "8")
    size = os.path.getsize(src)
    p = tmp_path / "t.emoe"
    with open(src, "rb") as f:
        p.write_bytes(f.read(int(size * keep_fraction)))
    with pytest.raises(edgemoe.FormatError):
        edgemoe.load(p)


def test_resident_checksum_mismatch(converted, tmp_path):
    p = copy_of(converted("qwen3_moe", "8"), tmp_path)
    flip_byte(p, open_container(p).sections["resident"]["offset"] + 100)
    with pytest.raises(edgemoe.FormatError, match="resident section checksum mismatch"):
        edgemoe.load(p)


def test_expert_checksum_mismatch_is_a_storage_error(converted, tmp_path):
    p = copy_of(converted("qwen3_moe", "8"), tmp_path)
    c = open_container(p)
    ids = reference("qwen3_moe")["input_ids"].tolist()
    # corrupt every expert of layer 0 so whatever the router picks is bad
    for blob in c.experts[0]:
        flip_byte(p, blob["offset"] + 10)
    model = edgemoe.load(p, threads=1)
    with pytest.raises(edgemoe.StorageError, match="checksum mismatch"):
        model.logits(ids)
    # the model stays usable for a clean error again, not a crash
    with pytest.raises(edgemoe.StorageError):
        model.logits(ids)


def test_manifest_corruption(converted, tmp_path):
    p = copy_of(converted("qwen3_moe", "8"), tmp_path)
    c = open_container(p)
    with open(p, "r+b") as f:
        f.seek(c.sections["manifest"]["offset"] + 5)
        f.write(b"#")
    with pytest.raises(edgemoe.FormatError, match="manifest checksum mismatch"):
        edgemoe.load(p)


@pytest.mark.parametrize("damage,message", [
    (lambda index: index[:-5], "ends early"),
    (lambda index: index + b"\0", "1 bytes follow the expert table"),
    (lambda index: index + b"\1", "ends early"),  # a low-bit copies' table announced, then nothing
    (lambda index: b"\xff\xff\xff\x7f" + index[4:], "claims more config fields than it holds"),
])
def test_a_damaged_index_is_refused(converted, tmp_path, damage, message):
    # the index's own CRC is made to match: these reach the reader's bounds, not the checksum
    from edgemoe.format.container import encode_index, replace_section

    p = copy_of(converted("qwen3_moe", "8"), tmp_path)
    c = open_container(p)
    replace_section(str(p), "index", damage(encode_index(c.config, c.tensors, c.experts)))
    with pytest.raises(edgemoe.FormatError, match=message):
        edgemoe.load(p)


def test_an_index_with_an_unknown_config_field_is_refused(converted, tmp_path):
    p = copy_of(converted("qwen3_moe", "8"), tmp_path)
    replace_tables(p, config=dict(open_container(p).config, attention_chunk=128))
    with pytest.raises(edgemoe.FormatError, match="unknown field 'attention_chunk'"):
        edgemoe.load(p)


def make_folder_copy(tmp_path, name="qwen3_moe"):
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    return dst


def test_unsupported_architecture(tmp_path):
    src = make_folder_copy(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["LlamaForCausalLM"]
    cfg["model_type"] = "llama"
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(edgemoe.UnsupportedModelError, match="architecture LlamaForCausalLM is not supported"):
        convert_hf(str(src), str(tmp_path / "out.emoe"), progress=False)
    assert not (tmp_path / "out.emoe").exists()


def test_unsupported_config_feature(tmp_path):
    src = make_folder_copy(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["hidden_act"] = "gelu"
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(edgemoe.UnsupportedModelError, match="activation 'gelu'"):
        convert_hf(str(src), str(tmp_path / "out.emoe"), progress=False)


def test_missing_tensor_fails_before_writing(tmp_path):
    src = make_folder_copy(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["num_hidden_layers"] += 1
    (src / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out.emoe"
    with pytest.raises(edgemoe.FormatError, match="lacks tensor model.layers"):
        convert_hf(str(src), str(out), progress=False)
    assert not out.exists() and not (tmp_path / "out.emoe.partial").exists()


def test_corrupt_safetensors_header(tmp_path):
    src = make_folder_copy(tmp_path)
    st = src / "model.safetensors"
    data = bytearray(st.read_bytes())
    data[0:8] = struct.pack("<Q", len(data) * 2)
    st.write_bytes(bytes(data))
    with pytest.raises(edgemoe.FormatError, match="header length"):
        convert_hf(str(src), str(tmp_path / "out.emoe"), progress=False)


def test_truncated_safetensors(tmp_path):
    src = make_folder_copy(tmp_path)
    st = src / "model.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[: len(data) // 2])
    with pytest.raises(edgemoe.FormatError, match="truncated"):
        convert_hf(str(src), str(tmp_path / "out.emoe"), progress=False)


def test_bad_bits(tmp_path):
    with pytest.raises(edgemoe.FormatError, match="unsupported bit width"):
        convert_hf(str(FIXTURES / "qwen3_moe"), str(tmp_path / "o.emoe"), bits="5", progress=False)


def test_token_ids_out_of_range(converted):
    model = edgemoe.load(converted("qwen3_moe", "8"), threads=1)
    with pytest.raises(ValueError, match="token ids must be in"):
        model.logits([0, model.info()["vocab"]])


def test_context_overflow(converted):
    model = edgemoe.load(converted("qwen3_moe", "8"), threads=1, ctx_size=16)
    with pytest.raises(edgemoe.ContextLengthError, match="exceed the context size of 16"):
        model.logits(list(range(17)))


@pytest.mark.parametrize("field,value", [("head_dim", 7), ("top_k", 99), ("n_kv_heads", 3), ("hidden", 0),
                                         ("vocab", 1 << 30), ("rms_norm_eps", float("nan"))])
def test_the_runtime_checks_the_config_without_python(converted, tmp_path, field, value):
    # The C++ engine is also driven without Python's validation (tests/cpp, the libFuzzer target):
    # it refuses a hostile config itself rather than sizing buffers from it.
    from edgemoe import _core

    path = copy_of(converted("qwen3_moe", "8"), tmp_path)
    replace_tables(path, config=dict(open_container(path).config, **{field: value}))
    with pytest.raises(edgemoe.FormatError, match="invalid model config"):
        _core.open_container(str(path))


@pytest.mark.parametrize("change,message", [
    ({"qkv_bias": 1}, "qkv_bias must be true or false"),
    ({"n_layers": 2.0}, "n_layers must be an integer"),
    ({"architecture": "llama"}, "unknown architecture 'llama' (available: mixtral, qwen2_moe, qwen3_moe, olmoe, gpt_oss, glm4_moe, "
                               "deepseek_v2, deepseek_v3, gemma4, qwen3_next, qwen3_5_moe, qwen3_vl_moe)"),
    ({"qk_norm": "both"}, "unknown qk_norm 'both' (available: none, head, full)"),
    ({"eos_token_ids": [1, 1 << 40]}, "eos_token_ids holds 1099511627776"),
    ({"eos_token_ids": [100000]}, "eos_token_ids holds 100000, outside the vocabulary"),
    ({"attention_chunk": 128}, "unknown field 'attention_chunk'"),
    ({"top_k": 1 << 70}, "top_k is out of range"),
    ({"shared_gate": True}, "shared_gate is set without a shared expert"),
    ({"rope_scaling": "yarn"}, "rope_scaling yarn needs rope_original_max_position"),
    ({"rope_scaling": "dynamic", "rope_factor": 2.0}, "rope_scaling dynamic needs rope_original_max_position"),
    ({"rope_scaling": "longrope"}, "unknown rope_scaling 'longrope' (available: none, linear, dynamic, yarn)"),
    ({"rope_factor": 0.0}, "rope_factor = 0.000000 is outside [1, 1000000]"),
    ({"sliding_window": 8}, "sliding_window is given without sliding_layers"),
    ({"sliding_layers": [0]}, "sliding_layers are given without a sliding_window"),
    ({"sliding_window": 1 << 20, "sliding_layers": [0]}, "sliding_window 1048576 exceeds max_position"),
    ({"sliding_window": 8, "sliding_layers": [1, 0]}, "sliding_layers must be ascending, without repeats"),
    ({"sliding_window": 8, "sliding_layers": [5]}, "sliding_layers holds layer 5 of 2"),
    ({"routing": "noisy"}, "unknown routing 'noisy' (available: softmax, topk_softmax, sigmoid)"),
    ({"expert_activation": "gelu"}, "unknown expert_activation 'gelu' (available: silu, swiglu_limited, gelu_tanh)"),
    ({"routing": "sigmoid", "n_group": 3}, "n_group 3 does not divide n_experts"),
    ({"routing": "sigmoid", "n_group": 2, "topk_group": 4}, "topk_group exceeds n_group"),
    ({"n_group": 2, "routing": "topk_softmax"}, "expert groups need softmax or sigmoid routing"),
    ({"group_score": "mean"}, "unknown group_score 'mean' (available: top2_sum, max)"),
    ({"routing": "sigmoid", "n_group": 8, "topk_group": 1}, "the topk_group best groups hold fewer than top_k"),
    ({"router_correction_bias": True}, "router_correction_bias needs sigmoid routing"),
    ({"rotary_dim": 7}, "rotary_dim must be even and at most head_dim"),
    ({"kv_lora_rank": 64}, "latent attention needs an even qk_rope_head_dim below head_dim"),
    ({"q_lora_rank": 8}, "q_lora_rank, qk_rope_head_dim and v_head_dim belong to latent attention"),
    ({"kv_lora_rank": 8, "qk_rope_head_dim": 4}, "latent attention needs a v_head_dim"),
    ({"kv_lora_rank": 8, "qk_rope_head_dim": 4, "v_head_dim": 8}, "latent attention does not combine with"),
    ({"kv_lora_rank": 8, "qk_rope_head_dim": 4, "v_head_dim": 8, "qk_norm": "none", "o_bias": True},
     "latent attention does not combine with qkv_bias, o_bias"),
    ({"kv_lora_rank": 4090, "qk_rope_head_dim": 8, "v_head_dim": 8, "qk_norm": "none"},
     "kv_lora_rank + qk_rope_head_dim exceeds 4096"),
    ({"dense_layers": [0]}, "dense_layers and dense_intermediate must be given together"),
    ({"dense_intermediate": 64}, "dense_layers and dense_intermediate must be given together"),
    ({"dense_layers": [0, 1], "dense_intermediate": 64}, "every layer is dense: no layer has experts"),
    ({"dense_layers": [2], "dense_intermediate": 64}, "dense_layers holds layer 2 of 2"),
    ({"dense_layers": [1, 1], "dense_intermediate": 64}, "dense_layers must be ascending, without repeats"),
    ({"rope_scaling": "dynamic", "rope_factor": 2.0, "rope_original_max_position": 16, "rotary_dim": 2},
     "dynamic rope scaling needs more than 2 rotating dims per head"),
])
def test_the_one_config_definition_refuses_bad_fields(converted, change, message):
    # csrc/model/config.cpp is the only list of fields; Python and the C++ tests go through it
    from edgemoe.format.model_config import validate_config

    cfg = dict(open_container(converted("qwen3_moe", "8")).config, **change)
    with pytest.raises(edgemoe.FormatError, match=re.escape(message)):
        validate_config(cfg)


def test_the_one_config_definition_fills_defaults_and_takes_integral_numbers(converted):
    from edgemoe.format.model_config import validate_config

    cfg = dict(open_container(converted("qwen3_moe", "8")).config, rope_theta=10000)
    del cfg["eos_token_ids"]
    checked = validate_config(cfg)
    assert checked["eos_token_ids"] == [] and checked["rope_theta"] == 10000
    missing = dict(cfg)
    del missing["hidden"]
    with pytest.raises(edgemoe.FormatError, match="lacks hidden"):
        validate_config(missing)


WRAP = 1 << 64


@pytest.mark.parametrize("where", ["expert_part", "resident_tensor", "resident_section", "expert_size"])
def test_the_runtime_checks_offsets_that_wrap_around_without_python(converted, tmp_path, where):
    # An offset near 2**64 makes `offset + length` wrap to a small number: a check written as
    # `offset + length > size` then passes and the engine reads outside its buffers.
    from edgemoe import _core
    from edgemoe.format import container

    path = copy_of(converted("qwen3_moe", "8"), tmp_path)
    c = open_container(path)
    tensors, experts = c.tensors, c.experts
    if where == "expert_part":  # the down projection "starts" 64 bytes before its blob
        experts[0][0]["parts"]["down"]["offset"] = WRAP - 64
        replace_tables(path, experts=experts)
    elif where == "resident_tensor":  # a tensor "starts" 64 bytes before the resident section
        next(iter(tensors.values()))["offset"] = WRAP - 64
        replace_tables(path, tensors=tensors)
    elif where == "resident_section":  # a section "ending" past 2**64: its rounded allocation would wrap
        sections = dict(c.sections)
        sections["resident"] = dict(sections["resident"], size=WRAP - sections["resident"]["offset"] + 64)
        with open(path, "r+b") as f:
            f.write(container._pack_header(sections))
    else:  # the libFuzzer finding of 2026-11-23: a blob size near 2**64 rounded the expert slots around to
        # 4 KiB, while a compressed blob's decompressor was told it could write that many bytes into one
        blob = experts[0][1]
        blob.update(compression="zstd", stored=blob["size"], size=WRAP - 1)
        replace_tables(path, experts=experts)
    with pytest.raises(edgemoe.FormatError, match="outside its blob|inconsistent size or offset|resident section|"
                                                  "larger than its projections"):
        _core.open_container(str(path))
