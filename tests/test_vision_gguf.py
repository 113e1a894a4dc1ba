"""Qwen3-VL-MoE from llama.cpp's files: a qwen3vlmoe GGUF and its mmproj (edgemoe/convert/gguf_mmproj.py),
written from the fixture by tools/export_gguf.py and tools/export_mmproj.py. The files are right
(llama.cpp's own mtmd reads them and computes what we compute from the folder), and the reader is
right (converted, they compute what the folder does)."""
import ctypes

import numpy as np
import pytest

import edgemoe
from conftest import FIXTURES, reference
from test_vision import PROMPT_IMAGES, prompt_spans
from test_gguf_convert import tools_export_gguf

gguf = pytest.importorskip("gguf", reason="the gguf package is not installed (pip install -e '.[test]')")
from edgemoe.convert.gguf import convert_gguf  # noqa: E402

NAME = "qwen3_vl_moe"


def tools_export_mmproj():
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_mmproj", FIXTURES.parent.parent / "tools" / "export_mmproj.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def vl_gguf(tmp_path_factory):
    d = tmp_path_factory.mktemp("vl_gguf")
    tools_export_gguf().export(str(FIXTURES / NAME), str(d / "text-f32.gguf"), "f32")
    tools_export_mmproj().export_mmproj(str(FIXTURES / NAME), str(d / "mmproj-f32.gguf"))
    return d / "text-f32.gguf", d / "mmproj-f32.gguf"


@pytest.fixture(scope="module")
def from_gguf(vl_gguf, tmp_path_factory):
    out = tmp_path_factory.mktemp("vl_gguf_emoe") / "m.emoe"
    convert_gguf(str(vl_gguf[0]), str(out), bits="f32", progress=False, mmproj=str(vl_gguf[1]))
    return edgemoe.load(str(out), threads=2, kv_cache="f32")


def test_the_gguf_and_its_mmproj_compute_what_the_folder_does(from_gguf, converted):
    """The fixture's own pixels (the processor's; an mmproj does not carry the folder's small pixel
    budget, so a GGUF model prepares images at Qwen3-VL's published one)."""
    folder = edgemoe.load(converted(NAME), threads=2, kv_cache="f32")
    assert from_gguf.config["vision_deepstack_layers"] == folder.config["vision_deepstack_layers"]
    settings = from_gguf.image_settings
    assert (settings.min_pixels, settings.image_mean) == (65536, folder.image_settings.image_mean)
    ref, cfg = reference(NAME), folder.config
    for prompt in PROMPT_IMAGES:
        ids = ref[f"{prompt}_ids"].astype(np.int32)
        ours = [m._engine.logits(ids, cfg["vocab"], images=prompt_spans(cfg, m._engine, ref, prompt))
                for m in (from_gguf, folder)]
        np.testing.assert_array_equal(ours[0], ours[1])  # measured: bit-identical (the same f32 tensors)


def llama_mtmd(text_gguf, mmproj, prompt: str, image: np.ndarray):
    """llama.cpp's token ids, image features and last logits for `prompt` (its <__media__> marker
    where the image goes), through llama-cpp-python's mtmd (CLIP flash attention off)."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from llama_cpp import mtmd_cpp as mtmd

    llm = llama_cpp.Llama(model_path=str(text_gguf), n_ctx=512, n_batch=512, n_threads=2, verbose=False,
                          flash_attn=False)
    p = mtmd.mtmd_context_params_default()
    p.use_gpu, p.n_threads, p.print_timings, p.warmup = False, 2, False, False
    p.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    ctx = mtmd.mtmd_init_from_file(str(mmproj).encode(), llm.model, p)
    assert ctx, "llama.cpp did not take the mmproj"
    try:
        H, W = image.shape[:2]
        bitmap = mtmd.mtmd_bitmap_init(W, H, (ctypes.c_uint8 * image.size).from_buffer_copy(image.tobytes()))
        text = mtmd.mtmd_input_text()
        text.text = prompt.encode()
        text.text_len, text.add_special, text.parse_special = len(text.text), True, True
        chunks = mtmd.mtmd_input_chunks_init()
        assert mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(text), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) == 0
        ids, features = [], None
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                tokens = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                ids += [tokens[j] for j in range(n.value)]
                continue
            n = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            ids += [-1] * n  # the image's tokens
            assert mtmd.mtmd_encode_chunk(ctx, chunk) == 0
            width = llama_cpp.llama_model_n_embd_inp(llm.model)
            features = np.ctypeslib.as_array(mtmd.mtmd_get_output_embd(ctx), shape=(n * width,)).reshape(n, width).copy()
        n_past = llama_cpp.llama_pos(0)
        assert mtmd.mtmd_helper_eval_chunks(ctx, llm._ctx.ctx, chunks, 0, 0, llm.n_batch, True, ctypes.byref(n_past)) == 0
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),)).copy()
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)
    finally:
        mtmd.mtmd_free(ctx)
        llm.close()
    return ids, features, logits


def test_llama_cpp_reads_the_files_as_we_compute_the_model(vl_gguf, converted):
    """An image already a multiple of 32 pixels (llama.cpp letterboxes and rounds otherwise, docs/
    VISION_MODELS.md B.5): llama.cpp's features and logits against ours from the folder. They differ
    by llama.cpp's own shortcuts (patch embedding in f16, tanh GELU in the mergers)."""
    model = edgemoe.load(converted(NAME), threads=2, kv_cache="f32")
    ref, c = reference(NAME), model.config
    image = np.ascontiguousarray(ref["image2"][:128, :64])  # 4 x 2 merged tokens, as they are (llama.cpp takes 8 at least)
    ids, theirs, their_logits = llama_mtmd(*vl_gguf, "<|im_start|>user\n<__media__>what is it?<|im_end|>\n"
                                           "<|im_start|>assistant\n", image)
    ids = [c["image_token_id"] if t == -1 else t for t in ids]
    ours = model.encode_image(image)
    assert ours.features.shape == theirs.shape
    feature_error = np.abs(ours.features - theirs).max() / np.abs(theirs).max()
    logit_error = np.abs(model.logits(ids, images=[ours])[-1] - their_logits).max() / np.abs(their_logits).max()
    # measured: features 4.7e-4, logits 1.2e-3 relative
    assert feature_error < 5e-3 and logit_error < 1e-2, (feature_error, logit_error)


def test_an_mmproj_that_does_not_fit_is_refused(vl_gguf, tmp_path):
    text, mmproj = vl_gguf
    with pytest.raises(edgemoe.UnsupportedModelError, match="qwen3vlmoe"):
        convert_gguf(str(FIXTURES / "gguf" / "mixtral-f32.gguf"), str(tmp_path / "x.emoe"), progress=False,
                     mmproj=str(mmproj))
    with pytest.raises(edgemoe.FormatError):  # a text model is not an mmproj
        convert_gguf(str(text), str(tmp_path / "x.emoe"), progress=False, mmproj=str(text))
    assert not (tmp_path / "x.emoe").exists()


def test_the_command_line_takes_the_mmproj(vl_gguf, tmp_path, capsys):
    from edgemoe.apps.cli import main

    text, mmproj = vl_gguf
    assert main(["convert", str(text), "-o", str(tmp_path / "vl.emoe"), "--mmproj", str(mmproj), "--bits", "8",
                 "--quiet"]) == 0
    model = edgemoe.load(str(tmp_path / "vl.emoe"), threads=2)
    assert model.takes_images and model.encode_image(reference(NAME)["image0"]).n_tokens == 70  # published budget
    capsys.readouterr()
    assert main(["convert", str(FIXTURES / NAME), "-o", str(tmp_path / "x.emoe"), "--mmproj", str(mmproj), "-q"]) != 0
    assert "--mmproj goes with a GGUF model" in capsys.readouterr().err


def test_qwen3_5s_gguf_and_its_mmproj_compute_what_the_folder_does(converted, tmp_path):
    """llama.cpp writes Qwen3.5-MoE's tower as the same projector (no DeepStack): with a qwen35moe GGUF
    it converts to what the folder computes; llama.cpp's mtmd encodes the file's image as we do."""
    name = "qwen3_5_moe_vl"
    tools_export_gguf().export(str(FIXTURES / name), str(tmp_path / "text.gguf"), "f32", gguf_arch="qwen35moe")
    tools_export_mmproj().export_mmproj(str(FIXTURES / name), str(tmp_path / "mmproj.gguf"))
    convert_gguf(str(tmp_path / "text.gguf"), str(tmp_path / "m.emoe"), bits="f32", progress=False,
                 mmproj=str(tmp_path / "mmproj.gguf"))
    from_gguf = edgemoe.load(str(tmp_path / "m.emoe"), threads=2, kv_cache="f32")
    folder = edgemoe.load(converted(name), threads=2, kv_cache="f32")
    ref, cfg = reference(name), folder.config
    assert from_gguf.config["mrope_sections"] == cfg["mrope_sections"]
    ids = ref["prompt2_ids"].astype(np.int32)
    ours, theirs = (m._engine.logits(ids, cfg["vocab"], images=prompt_spans(cfg, m._engine, ref, "prompt2"))
                    for m in (from_gguf, folder))
    # measured 2.5e-7 relative: the hybrid GGUF's norms are stored as 1 + w (gguf_qwen_hybrid.py)
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 2.5e-6
    image = np.ascontiguousarray(ref["image2"][:128, :64])
    _, llama_features, _ = llama_mtmd(tmp_path / "text.gguf", tmp_path / "mmproj.gguf",
                                      "<|im_start|>user\n<__media__>what?<|im_end|>\n", image)
    mine = folder.encode_image(image).features
    # measured 4.3e-4 relative (llama.cpp's f16 patch embedding, tanh GELU in the merger)
    assert np.abs(mine - llama_features).max() / np.abs(llama_features).max() < 5e-3
