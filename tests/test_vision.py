"""Vision-language models (Qwen3-VL-MoE, Qwen3.5-MoE with its tower; docs/VISION_MODELS.md): the
tower's features, the logits of prompts with images and greedy continuations against transformers
(tests/fixtures/qwen3_vl_moe and qwen3_5_moe_vl, tools/make_vision_fixtures.py), what the match
rests on, and what the engine refuses."""
import numpy as np
import pytest

import edgemoe
from conftest import FIXTURES, assert_conversion_refused, reference
from edgemoe import _core

VISION = ["qwen3_vl_moe", "qwen3_5_moe_vl"]
IMAGES = 3  # image0..2 in each fixture's reference.npz
PROMPT_IMAGES = {"prompt1": [0], "prompt2": [1, 2]}


def rel(ours, ref):
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def engine(path):
    model = edgemoe.load(str(path), threads=2, kv_cache="f32")
    return model, model._engine


def features(eng, ref, i):
    g = ref[f"grid{i}"]
    return eng.encode_image(ref[f"pixel_values{i}"], int(g[1]), int(g[2]))


def spans(cfg, ids, feats):
    """(first token, merged grid, features) of each image token run of ids, in order."""
    img, m = cfg["image_token_id"], cfg["vision_merge"]
    starts = [k for k in range(len(ids)) if ids[k] == img and (k == 0 or ids[k - 1] != img)]
    return [(s, g[1] // m, g[2] // m, f) for s, (f, g) in zip(starts, feats)]


def prompt_spans(cfg, eng, ref, prompt):
    feats = [(features(eng, ref, i), ref[f"grid{i}"]) for i in PROMPT_IMAGES[prompt]]
    return spans(cfg, ref[f"{prompt}_ids"], feats)


@pytest.mark.parametrize("name", VISION)
def test_the_towers_features_are_transformers(converted, name):
    # measured: 1.1e-6 relative (1.3e-5 on features of magnitude 11) for the merged features and
    # every DeepStack feature of three images of different grids (4x6, 4x8 upscaled, 10x6)
    model, eng = engine(converted(name))
    ref, H = reference(name), model.config["hidden"]
    for i in range(IMAGES):
        out = features(eng, ref, i)
        assert rel(out[:, :H], ref[f"vision{i}"]) < 1e-5
        stack = ref[f"deepstack{i}"] if f"deepstack{i}" in ref else np.zeros((0,) + out[:, :H].shape)
        assert out.shape[1] == H * (1 + len(stack))
        for k, want in enumerate(stack):
            assert rel(out[:, H * (k + 1):H * (k + 2)], want) < 1e-5


@pytest.mark.parametrize("name,bound", [
    ("qwen3_vl_moe", 2e-5),     # measured 1.9e-6
    ("qwen3_5_moe_vl", 5e-4),   # measured 9.3e-5 (transformers' own f32 hybrid prefill is ~1e-4 from f64: test_hybrid)
])
@pytest.mark.parametrize("prompt", list(PROMPT_IMAGES))
def test_logits_and_greedy_continuations_with_images_are_transformers(converted, name, bound, prompt):
    model, eng = engine(converted(name))
    ref, cfg = reference(name), model.config
    ids = ref[f"{prompt}_ids"].astype(np.int32)
    images = prompt_spans(cfg, eng, ref, prompt)
    assert rel(eng.logits(ids, cfg["vocab"], images=images), ref[f"{prompt}_logits"]) < bound
    eng.reset()
    out, tokens = eng.eval(ids, cfg["vocab"], images=images), []
    for _ in range(len(ref[f"{prompt}_greedy"])):
        tokens.append(int(np.argmax(out)))
        out = eng.eval(np.array(tokens[-1:], np.int32), cfg["vocab"])
    assert tokens == ref[f"{prompt}_greedy"].tolist()


@pytest.mark.parametrize("name,bound", [("qwen3_vl_moe", 5e-6),     # measured 8.7e-7 relative
                                        ("qwen3_5_moe_vl", 3e-4)])  # measured 3.9e-5 (the hybrid's reference noise)
def test_text_alone_through_a_model_that_takes_images(converted, name, bound):
    model, _ = engine(converted(name))
    ref = reference(name)
    assert rel(model.logits(ref["text_ids"].tolist()), ref["text_logits"]) < bound


def test_each_part_of_the_image_path_is_what_the_match_rests_on(converted):
    """Positions, the place of each image's rows and DeepStack: with one taken away the logits move
    by far more than the bound above."""
    name = "qwen3_vl_moe"
    model, eng = engine(converted(name))
    ref, cfg, H = reference(name), model.config, model.config["hidden"]
    ids = ref["prompt2_ids"].astype(np.int32)
    good = prompt_spans(cfg, eng, ref, "prompt2")
    want = ref["prompt2_logits"]

    def moved(images):
        return rel(eng.logits(ids, cfg["vocab"], images=images), want)

    no_deepstack = [(s, h, w, np.concatenate([f[:, :H], np.zeros_like(f[:, H:])], 1)) for s, h, w, f in good]
    transposed = [(s, w, h, f) for s, h, w, f in good]  # the grid read as columns x rows: other positions
    swapped = [(s, h, w, f) for (s, _, _, _), (_, h, w, f) in zip(good, good[::-1])]
    for images in (no_deepstack, transposed):
        assert moved(images) > 1e-2
    with pytest.raises(ValueError):  # the two images differ in size: swapped, they do not fit their runs
        moved(swapped)


@pytest.mark.parametrize("name", VISION)
def test_an_image_survives_a_context_that_is_cut_after_it(converted, name):
    """Text after an image takes positions from the image's grid: truncating back into that text
    and evaluating the rest again gives the same logits (a hybrid model goes back to a state
    checkpoint, before the image: then the image is evaluated again too)."""
    model, eng = engine(converted(name))
    ref, cfg = reference(name), model.config
    ids = ref["prompt1_ids"].astype(np.int32)
    (first, h, w, f), = images = prompt_spans(cfg, eng, ref, "prompt1")
    full = eng.logits(ids, cfg["vocab"], images=images)
    eng.eval(np.array([5, 6], np.int32), cfg["vocab"])  # a turn after it
    model.truncate(len(ids) - 4)
    kept = model.n_past
    assert kept == len(ids) - 4 or (name == "qwen3_5_moe_vl" and kept <= first)
    again = eng.eval(ids[kept:], cfg["vocab"], all_logits=True,
                     images=[(first - kept, h, w, f)] if kept <= first else [])
    # measured: bit-identical
    np.testing.assert_array_equal(again[-4:], full[-4:])


def test_the_engine_refuses_images_it_cannot_place(converted):
    name = "qwen3_vl_moe"
    model, eng = engine(converted(name))
    ref, cfg, V = reference(name), model.config, model.config["vocab"]
    ids = ref["prompt1_ids"].astype(np.int32)
    (first, h, w, f), = prompt_spans(cfg, eng, ref, "prompt1")
    bad = [
        [(first + 1, h, w, f)],                 # over a text token
        [(first, h + 1, w, f)],                 # features of another grid
        [(first, h, w, f[:, :cfg["hidden"]])],  # without its DeepStack rows
        [(len(ids) - 2, h, w, f)],              # past the end
        [(first, h, w, f), (first, h, w, f)],   # overlapping
    ]
    for images in bad:
        with pytest.raises(ValueError):
            eng.logits(ids, V, images=images)
    with pytest.raises(ValueError):  # a grid that is not whole merge windows
        eng.encode_image(ref["pixel_values0"][:20], 4, 5)
    with pytest.raises(ValueError):  # rows of the wrong width
        eng.encode_image(ref["pixel_values0"][:, :100], 4, 6)


def test_a_text_model_takes_no_images(converted):
    model = edgemoe.load(converted("qwen3_5_moe"), threads=2)
    with pytest.raises(ValueError, match="no vision tower"):
        model._engine.encode_image(np.zeros((16, 1536), np.float32), 4, 4)
    with pytest.raises(ValueError, match="no vision tower"):
        model._engine.logits(np.array([1, 2, 3], np.int32), model.config["vocab"],
                             images=[(0, 1, 1, np.zeros((1, model.config["hidden"]), np.float32))])


def test_a_processor_that_cuts_other_patches_is_refused(tmp_path):
    import json
    import shutil

    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "qwen3_vl_moe", src)
    processor = json.loads((src / "preprocessor_config.json").read_text())
    del processor["patch_size"]  # transformers' class default: 14
    (src / "preprocessor_config.json").write_text(json.dumps(processor))
    from edgemoe.convert import convert_hf
    with pytest.raises(edgemoe.FormatError, match="14-pixel patches"):
        convert_hf(str(src), str(tmp_path / "x.emoe"), progress=False)
    assert not (tmp_path / "x.emoe").exists()


@pytest.mark.parametrize("changes,message", [
    ({"vision_config": {"hidden_act": "silu"}}, "vision activation"),
    ({"vision_config": {"num_position_embeddings": 60}}, "not a square"),
    ({"vision_config": {"out_hidden_size": 32}}, "out_hidden_size"),
    ({"image_token_id": None}, "image_token_id"),
    ({"text_config": {"rope_parameters": {"rope_type": "default", "rope_theta": 5e6, "mrope_section": [4, 2, 1]}}},
     "mrope_section"),
])
def test_hostile_vision_configs_are_refused_before_writing(tmp_path, changes, message):
    import json

    config = json.loads((FIXTURES / "qwen3_vl_moe" / "config.json").read_text())
    for key, value in changes.items():
        config[key] = dict(config[key], **value) if isinstance(value, dict) else value
    assert_conversion_refused(tmp_path, "qwen3_vl_moe", {k: config[k] for k in changes}, message)


@pytest.mark.parametrize("changes,message", [
    ({"vision_depth": 2, "vision_hidden": 32}, "vision_intermediate"),
    ({"mrope_sections": [4, 2, 1]}, "mrope_sections must sum"),
    ({"vision_heads": 3}, "vision_hidden must split"),
    ({"vision_deepstack_layers": [2, 0]}, "ascending"),
    ({"vision_deepstack_layers": [0, 7]}, "block the tower lacks"),
    ({"image_token_id": 388}, "outside the vocabulary"),
])
def test_a_container_config_with_bad_vision_fields_is_refused(converted, changes, message):
    cfg = dict(edgemoe.load(converted("qwen3_vl_moe"), threads=1).config)
    if "vision_depth" in changes:  # a tower on a model without one
        cfg = dict(edgemoe.load(converted("qwen3_5_moe"), threads=1).config, mrope_sections=[1, 1, 0])
        cfg["image_token_id"] = 5
    cfg.update(changes)
    with pytest.raises(edgemoe.FormatError, match=message):
        _core.check_config(cfg)


# ------------------------------------------------------------ the Python API


def one_placeholder(ids, image_token):
    """ids with each run of image tokens made one placeholder (what a chat template writes)."""
    out = []
    for t in ids.tolist():
        if not (t == image_token and out and out[-1] == image_token):
            out.append(t)
    return out


@pytest.mark.parametrize("name", VISION)
def test_generate_with_images_is_transformers_greedy(converted, name, tmp_path):
    """From the images themselves (array, PNG file, PIL image) through the model's preprocessing
    (bit-identical to transformers' processor: test_image_preprocess.py) and the placeholders' expansion."""
    from PIL import Image

    model = edgemoe.load(converted(name), threads=2, kv_cache="f32")
    ref, img = reference(name), model.config["image_token_id"]
    Image.fromarray(ref["image1"]).save(tmp_path / "one.png")
    for prompt, images in (("prompt1", [ref["image0"]]),
                           ("prompt2", [str(tmp_path / "one.png"), Image.fromarray(ref["image2"])])):
        ids = one_placeholder(ref[f"{prompt}_ids"], img)
        out = model.generate(ids, max_tokens=12, stop_at_eos=False, images=images)
        assert out == ref[f"{prompt}_greedy"].tolist()


def test_images_without_placeholders_go_before_the_prompt(converted):
    model = edgemoe.load(converted("qwen3_vl_moe"), threads=2, kv_cache="f32")
    ref, c = reference("qwen3_vl_moe"), model.config
    ids = one_placeholder(ref["prompt1_ids"], c["image_token_id"])
    block = [c["vision_start_token_id"], c["image_token_id"], c["vision_end_token_id"]]
    start = ids.index(block[0])
    text = ids[:start] + ids[start + 3:]
    placed = model.generate(text, max_tokens=6, stop_at_eos=False, images=[ref["image0"]])
    explicit = model.generate(block + text, max_tokens=6, stop_at_eos=False, images=[ref["image0"]])
    assert placed == explicit


def test_a_chat_with_images_keeps_them_with_their_turns(converted):
    """Each reply equals a fresh evaluation of the whole conversation, and a later turn's new image
    is evaluated, not taken for an earlier one of the same size."""
    from edgemoe.session import ChatSession

    model = edgemoe.load(converted("qwen3_vl_moe"), threads=2, kv_cache="f32")
    ref = reference("qwen3_vl_moe")
    flipped = ref["image0"][::-1].copy()  # same size, other pixels
    chat = ChatSession(model, max_tokens=5)
    replies = ["".join(chat.send("what is this?", images=[ref["image0"]])),
               "".join(chat.send("and this?", images=[flipped])),
               "".join(chat.send("thanks"))]
    fresh = ChatSession(edgemoe.load(converted("qwen3_vl_moe"), threads=2, kv_cache="f32"), max_tokens=5)
    for turn, (text, images) in enumerate((("what is this?", [ref["image0"]]), ("and this?", [flipped]),
                                           ("thanks", []))):
        fresh.messages = chat.messages[:2 * turn]
        fresh.cached = []
        fresh.model.reset()
        assert "".join(fresh.send(text, images=images)) == replies[turn]
    assert chat.messages[2]["images"][0].digest != chat.messages[0]["images"][0].digest


def test_bad_images_get_the_packages_errors(converted, tmp_path):
    from edgemoe.session import ChatSession

    model = edgemoe.load(converted("qwen3_vl_moe"), threads=2)
    ref, c = reference("qwen3_vl_moe"), model.config
    ids = one_placeholder(ref["prompt1_ids"], c["image_token_id"])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    truncated = tmp_path / "truncated.png"
    from PIL import Image
    Image.fromarray(ref["image2"]).save(tmp_path / "whole.png")
    whole = (tmp_path / "whole.png").read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    from test_image_preprocess import _png_with_header_size
    huge = tmp_path / "huge.png"  # its header claims 100 megapixels: refused before decoding
    huge.write_bytes(_png_with_header_size(10000, 10000))
    for images in ([str(corrupt)], [str(truncated)], [str(tmp_path / "missing.png")], [str(huge)],
                   [ref["image0"], ref["image0"]],          # more images than placeholders
                   ["https://example.com/cat.png"]):        # remote: a device may be offline
        with pytest.raises(edgemoe.ImageError):
            model.generate(ids, max_tokens=2, images=images)
    text_model = edgemoe.load(converted("qwen3_5_moe"), threads=2)
    with pytest.raises(edgemoe.ImageError, match="takes no images"):
        text_model.generate("hello", max_tokens=2, images=[ref["image0"]])
    chat = ChatSession(text_model, max_tokens=2)
    with pytest.raises(edgemoe.ImageError):
        list(chat.send("hello", images=[ref["image0"]]))
    assert chat.messages == []


def test_the_pixel_budget_bounds_the_image_and_the_plan_counts_it(converted):
    small = edgemoe.load(converted("qwen3_vl_moe"), threads=2, kv_cache="f32", max_image_pixels=32 * 32 * 4)
    large = edgemoe.load(converted("qwen3_vl_moe"), threads=2, kv_cache="f32")
    ref = reference("qwen3_vl_moe")
    assert small.encode_image(ref["image2"]).n_tokens == 2  # 150x90 resized to 64x32: at most 4 merged tokens
    assert large.encode_image(ref["image2"]).n_tokens == 15
    assert 0 < small.plan.vision_bytes < large.plan.vision_bytes
    text_model = edgemoe.load(converted("qwen3_5_moe"), threads=2)
    assert text_model.plan.vision_bytes == 0
    # an image whose short side is already one window: the processor keeps it 32 pixels high and
    # its long side over the budget (transformers too); refused, not computed beyond the plan
    with pytest.raises(edgemoe.ImageError, match="max_image_pixels"):
        small.encode_image(np.zeros((10, 1999, 3), np.uint8))
    with pytest.raises(ValueError, match="max_image_pixels"):  # the engine keeps the plan's promise
        small._engine.encode_image(ref["pixel_values2"], 10, 6)


# ------------------------------------------------------------ chat and server


def png_data_url(array) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_the_chat_command_attaches_images(converted, tmp_path):
    import io

    from PIL import Image

    from edgemoe.apps.chat import ChatREPL
    from edgemoe.session import ChatSession

    ref = reference("qwen3_vl_moe")
    Image.fromarray(ref["image0"]).save(tmp_path / "cat.png")
    model = edgemoe.load(converted("qwen3_vl_moe"), threads=2, kv_cache="f32")
    out, err = io.StringIO(), io.StringIO()
    script = f"/image {tmp_path / 'missing.png'}\n/image {tmp_path / 'cat.png'}\nwhat is it?\n"
    ChatREPL(ChatSession(model, max_tokens=4), stdin=io.StringIO(script), stdout=out, stderr=err,
             interactive=False).run()
    assert "[error:" in err.getvalue() and "[image attached: 6 tokens" in err.getvalue()
    fresh = ChatSession(edgemoe.load(converted("qwen3_vl_moe"), threads=2, kv_cache="f32"), max_tokens=4)
    assert out.getvalue() == "".join(fresh.send("what is it?", images=[ref["image0"]])) + "\n"


def test_the_server_takes_image_url_parts(converted, tmp_path):
    from fastapi.testclient import TestClient

    from edgemoe.api import CancelToken
    from edgemoe.apps.server import Server, create_app
    from edgemoe.session import ChatSession

    ref = reference("qwen3_vl_moe")
    model = edgemoe.load(converted("qwen3_vl_moe"), threads=2, kv_cache="f32")
    server = Server(model, "vl", defaults={"temperature": 0.0}, image_dir=str(tmp_path / "images"))
    (tmp_path / "images").mkdir()
    from PIL import Image
    Image.fromarray(ref["image0"]).save(tmp_path / "images" / "one.png")
    Image.fromarray(ref["image0"]).save(tmp_path / "outside.png")

    def body(url, text="what is it?"):
        return {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                          {"type": "text", "text": text}]}], "max_tokens": 4}

    fresh = ChatSession(edgemoe.load(converted("qwen3_vl_moe"), threads=2, kv_cache="f32"), max_tokens=4)
    want = "".join(fresh.send("what is it?", images=[ref["image0"]]))
    for url in (png_data_url(ref["image0"]), str(tmp_path / "images" / "one.png"),
                "file://" + str(tmp_path / "images" / "one.png")):
        req = server.chat_request(body(url))
        assert "".join(piece for piece, _ in server.generate(req, CancelToken(), {})) == want

    client = TestClient(create_app(server))
    import base64

    from test_image_preprocess import _png_with_header_size
    huge = "data:image/png;base64," + base64.b64encode(_png_with_header_size(10000, 10000)).decode()
    for url in ("https://example.com/cat.png", "data:image/png;base64,!!!", png_data_url(ref["image0"])[:200],
                str(tmp_path / "images" / "missing.png"), "data:image/png;base64," + "A" * (21 << 20), huge,
                str(tmp_path / "outside.png"),                     # outside --image-dir
                str(tmp_path / "images" / ".." / "outside.png")):
        r = client.post("/v1/chat/completions", json=body(url))
        assert r.status_code == 400 and r.json()["error"]["message"], url
    two = body(png_data_url(ref["image0"]))
    two["messages"][0]["content"].append({"type": "image_url", "image_url": {"url": png_data_url(ref["image0"])}})
    assert client.post("/v1/chat/completions", json=two).status_code == 200  # two images, two placeholders
    many = body(png_data_url(ref["image0"]))
    many["messages"][0]["content"] *= 9
    assert client.post("/v1/chat/completions", json=many).status_code == 400  # more than a request takes
    text_server = Server(edgemoe.load(converted("qwen3_5_moe"), threads=2), "text")
    r = TestClient(create_app(text_server)).post("/v1/chat/completions", json=body(png_data_url(ref["image0"])))
    assert r.status_code == 400 and "takes no images" in r.json()["error"]["message"]


def test_without_vision_the_tower_stays_on_storage(converted):
    with_tower = edgemoe.load(converted("qwen3_vl_moe"), threads=2, kv_cache="f32")
    text_only = edgemoe.load(converted("qwen3_vl_moe"), threads=2, kv_cache="f32", vision=False)
    tower = with_tower.info()["vision_tower_bytes"]
    assert tower > 0 and text_only.plan.vision_bytes == 0
    assert with_tower.plan.resident_bytes - text_only.plan.resident_bytes >= tower
    assert text_only._engine.allocated_bytes < with_tower._engine.allocated_bytes - tower
    ref = reference("qwen3_vl_moe")
    np.testing.assert_array_equal(text_only.logits(ref["text_ids"].tolist()), with_tower.logits(ref["text_ids"].tolist()))
    with pytest.raises(edgemoe.ImageError, match="without its vision tower"):
        text_only.generate("hi", max_tokens=1, images=[ref["image0"]])


def test_a_container_with_a_text_tensor_after_the_tower_is_refused(converted, tmp_path):
    # Without vision an engine loads the resident section up to the tower's first tensor: a tensor
    # it binds must not lie beyond, where it would read past what it loaded.
    import shutil

    from container_edit import replace_tables
    from edgemoe.format.container import open_container

    out = tmp_path / "vl.emoe"
    shutil.copy(converted("qwen3_vl_moe"), out)
    tensors = dict(open_container(str(out)).tensors)
    a, b = "norm", "vision.merger.norm_bias"  # both f32 vectors
    tensors[a], tensors[b] = dict(tensors[b], shape=tensors[a]["shape"]), dict(tensors[a], shape=tensors[b]["shape"])
    tensors[a]["nbytes"], tensors[b]["nbytes"] = tensors[b]["nbytes"], tensors[a]["nbytes"]
    replace_tables(out, tensors=tensors)
    with pytest.raises(edgemoe.FormatError, match="lies after the vision tower"):
        open_container(str(out))


@pytest.mark.parametrize("bits,bound", [("f16", 5e-3),   # measured 4.6e-4
                                        ("8", 0.1)])     # measured 2.0e-2 (8-bit rows, 8-bit activations)
def test_a_quantized_tower_stays_near_transformers(converted, bits, bound):
    model = edgemoe.load(converted("qwen3_vl_moe", bits), threads=2, kv_cache="f32")
    ref, H = reference("qwen3_vl_moe"), model.config["hidden"]
    types = {n: t["type"] for n, t in model.container.tensors.items() if n.startswith("vision.blocks.0.")}
    assert types["vision.blocks.0.qkv"] == {"f16": "f16", "8": "q8"}[bits] and types["vision.blocks.0.norm1"] == "f32"
    for i in range(IMAGES):
        assert rel(model.encode_image(ref[f"image{i}"]).features[:, :H], ref[f"vision{i}"]) < bound


@pytest.mark.parametrize("name", VISION)
def test_an_image_split_across_prefill_batches(converted, name):
    """Batches of 5 tokens cut both images of prompt 2 (8 and 15 tokens): the positions and rows of
    each image's later tokens come from where its first went (measured: bit-identical)."""
    from conftest import small_batch_engine

    ref = reference(name)
    whole, vocab = small_batch_engine(converted(name), max_batch=256, ctx_size=64)
    split, _ = small_batch_engine(converted(name), max_batch=5, ctx_size=64)
    cfg = edgemoe.load(converted(name), threads=1).config
    ids = ref["prompt2_ids"].astype(np.int32)
    want = whole.logits(ids, vocab, images=prompt_spans(cfg, whole, ref, "prompt2"))
    np.testing.assert_array_equal(split.logits(ids, vocab, images=prompt_spans(cfg, split, ref, "prompt2")), want)


@pytest.mark.parametrize("draft", ["ngram", "cache"])
def test_drafting_on_a_hybrid_without_checkpoints_keeps_its_images(converted, draft):
    """Without state checkpoints a rejected draft sends a hybrid model back to the start: the
    prompt is evaluated again with its images, and the output is plain decoding's."""
    ref = reference("qwen3_5_moe_vl")
    ids = one_placeholder(ref["prompt2_ids"], edgemoe.load(converted("qwen3_5_moe_vl"), threads=1).config["image_token_id"])
    images = [ref["image1"], ref["image2"]]
    plain = edgemoe.load(converted("qwen3_5_moe_vl"), threads=2, kv_cache="f32", state_checkpoints=0)
    drafted = edgemoe.load(converted("qwen3_5_moe_vl"), threads=2, kv_cache="f32", state_checkpoints=0, draft=draft)
    want = plain.generate(ids, max_tokens=12, stop_at_eos=False, images=images)
    assert want == ref["prompt2_greedy"].tolist()
    assert drafted.generate(ids, max_tokens=12, stop_at_eos=False, images=images) == want
