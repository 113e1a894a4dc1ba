"""llama.cpp's qwen35moe and qwen3next GGUFs (edgemoe/convert/gguf_qwen_hybrid.py): written by
tools/export_gguf.py from the Qwen3.5 fixture (llama.cpp's qwen3next computes the same layers), then
llama.cpp's logits on that file against transformers' (the file is right) and against ours after
converting it (the reader is right)."""
import numpy as np
import pytest

import edgemoe
from conftest import FIXTURES, llama_logits, reference, rel_error
from edgemoe.errors import FormatError

gguf = pytest.importorskip("gguf", reason="the gguf package is not installed (pip install -e '.[test]')")
from edgemoe.convert.gguf import GGUFCheckpoint, convert_gguf, hf_config  # noqa: E402
from test_gguf_convert import tools_export_gguf  # noqa: E402

# f32, measured: llama.cpp from transformers 6.5e-5 (both archs), ours from llama.cpp 2.2e-5
# (qwen35moe) and 2.4e-5 (qwen3next), ours from transformers 6.3e-5 (as from the folder).
F32_REL_TOL = 5e-4


@pytest.fixture(scope="module", params=["qwen35moe", "qwen3next"])
def hybrid_gguf(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("hybrid_gguf") / f"{request.param}-f32.gguf"
    tools_export_gguf().export(str(FIXTURES / "qwen3_5_moe"), str(out), "f32", gguf_arch=request.param)
    return request.param, out


def test_f32_hybrid_gguf_matches_llama_cpp_and_transformers(hybrid_gguf, tmp_path):
    arch, src = hybrid_gguf
    ref = reference("qwen3_5_moe")
    ids = ref["input_ids"].tolist()
    theirs = llama_logits(src, ids)
    assert rel_error(theirs, ref["logits"]).max() < F32_REL_TOL
    out = tmp_path / "m.emoe"
    convert_gguf(str(src), str(out), bits="f32", progress=False)
    model = edgemoe.load(str(out), threads=2, kv_cache="f32")
    assert model.config["architecture"] == {"qwen35moe": "qwen3_5_moe", "qwen3next": "qwen3_next"}[arch]
    ours = model.logits(ids)
    assert rel_error(ours, theirs).max() < F32_REL_TOL
    assert rel_error(ours, ref["logits"]).max() < F32_REL_TOL
    out = model.generate(ref["greedy_prompt"].tolist(), max_tokens=len(ref["greedy_ids"]), stop_at_eos=False)
    assert out == ref["greedy_ids"].tolist()


def test_the_reader_undoes_what_llama_cpps_converter_changed(hybrid_gguf):
    # Its norms hold 1 + w, ssm_a -exp(A_log), qwen35moe's value heads are tiled: served back as
    # transformers has them (the fixture's own tensors), exactly but for float32 rounding ((1 + w) - 1
    # is w to one float32 step of 1 + w, 2.4e-7 below 2; measured 1.2e-7).
    from safetensors.numpy import load_file

    arch, src = hybrid_gguf
    hf = load_file(str(FIXTURES / "qwen3_5_moe" / "model.safetensors"))
    ck = GGUFCheckpoint(str(src))
    for name in ["model.layers.0.input_layernorm.weight", "model.layers.1.self_attn.q_norm.weight",
                 "model.layers.0.linear_attn.in_proj_qkv.weight", "model.layers.2.linear_attn.in_proj_z.weight",
                 "model.layers.0.linear_attn.in_proj_b.weight", "model.layers.2.linear_attn.in_proj_a.weight",
                 "model.layers.0.linear_attn.dt_bias", "model.layers.2.linear_attn.out_proj.weight",
                 "model.layers.0.linear_attn.conv1d.weight", "model.norm.weight"]:
        np.testing.assert_allclose(ck.get(name), hf[name], rtol=0, atol=2.4e-7, err_msg=name)
    np.testing.assert_allclose(ck.get("model.layers.0.linear_attn.A_log"), hf["model.layers.0.linear_attn.A_log"],
                               rtol=1e-6, atol=1e-7)


def test_a_q8_0_hybrid_gguf_stays_close_to_llama_cpp(hybrid_gguf, tmp_path):
    # llama.cpp's own Q8_0 of the file: both engines round activations to 8 bits their own way on
    # this chaotic random fixture (llama.cpp itself is 0.16 from transformers' f32 logits).
    # Median relative error measured 0.031.
    arch, src = hybrid_gguf
    q = tmp_path / f"{arch}-q8_0.gguf"
    tools_export_gguf().quantize(str(src), str(q), "q8_0")
    ids = reference("qwen3_5_moe")["input_ids"].tolist()
    out = tmp_path / "m.emoe"
    convert_gguf(str(q), str(out), bits="8", progress=False)
    ours = edgemoe.load(str(out), threads=2, kv_cache="f32").logits(ids)
    assert np.median(rel_error(ours, llama_logits(q, ids))) < 0.1


@pytest.mark.parametrize("fields,message", [
    ({"ssm.inner_size": 50}, "not a multiple of ssm.time_step_rank"),
    ({"ssm.group_count": 0}, "not a positive integer"),
    ({"attention.recurrent_layers": [True, False]}, "does not name each of the 4 layers"),
])
def test_inconsistent_hybrid_metadata_is_refused(hybrid_gguf, monkeypatch, fields, message):
    # (read as the file is opened, and again as its config is made: either refuses)
    arch, src = hybrid_gguf
    real = GGUFCheckpoint.field
    changed = {f"{arch}.{k}": v for k, v in fields.items()}
    monkeypatch.setattr(GGUFCheckpoint, "field",
                        lambda self, key, default=None: changed[key] if key in changed else real(self, key, default))
    with pytest.raises(FormatError, match=message):
        hf_config(GGUFCheckpoint(str(src)))


def test_a_gguf_keeps_the_multi_token_prediction_head_as_a_folder_does(tmp_path):
    # llama.cpp's converter writes the head as a NextN block after the layers (its nextn.* tensors
    # and a full-attention MoE layer); converted, it is the same kept tensors as from the folder.
    from edgemoe import _core
    from edgemoe.convert import convert_hf
    from edgemoe.format.container import open_container
    from test_hybrid import _with_mtp_head

    src, _ = _with_mtp_head(tmp_path, stacked=True)
    gguf_path = tmp_path / "mtp.gguf"
    tools_export_gguf().export(str(src), str(gguf_path), "f32")
    from_gguf, from_folder = tmp_path / "g.emoe", tmp_path / "f.emoe"
    convert_gguf(str(gguf_path), str(from_gguf), bits="f32", progress=False)
    convert_hf(str(src), str(from_folder), bits="f32", progress=False)
    a, b = open_container(str(from_gguf)), open_container(str(from_folder))
    kept = [n for n in b.tensors if n.startswith(_core.KEPT_FOR_LATER_PREFIX)]
    assert kept and sorted(n for n in a.tensors if n.startswith(_core.KEPT_FOR_LATER_PREFIX)) == sorted(kept)

    def values(c, path, name):
        t = c.tensors[name]
        return np.fromfile(str(path), np.float32, int(np.prod(t["shape"])),
                           offset=c.sections["resident"]["offset"] + t["offset"])

    for name in kept:  # exactly: (1 + w) - 1 + 1 is 1 + w again in float32
        np.testing.assert_array_equal(values(a, from_gguf, name), values(b, from_folder, name), err_msg=name)
    ids = reference("qwen3_5_moe")["input_ids"].tolist()
    ours = edgemoe.load(str(from_gguf), threads=2, kv_cache="f32").logits(ids)
    assert rel_error(ours, llama_logits(gguf_path, ids)).max() < F32_REL_TOL  # llama.cpp skips the head too
