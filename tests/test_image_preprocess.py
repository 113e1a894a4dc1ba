"""Image input and preprocessing for Qwen3-VL-MoE / Qwen3.5-MoE (edgemoe.vision), against
transformers' Qwen2VLImageProcessorPil outputs recorded by tools/make_image_references.py.
Needs only numpy, Pillow and pytest."""
import base64
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from edgemoe.errors import EdgeMoEError, FormatError, ImageError, UnsupportedModelError
from edgemoe.vision.image_input import DEFAULT_MAX_INPUT_PIXELS, load_image
from edgemoe.vision.preprocess import ImageSettings, PreprocessedImage, preprocess, smart_resize
from conftest import FIXTURES

REFERENCE = np.load(FIXTURES / "image_processor" / "reference.npz")
META = json.loads(str(REFERENCE["meta"]))
CASES = [name for name, _ in META["cases"]]
CONFIG_OF = dict(META["cases"])

QWEN3_VL_CONFIG = {"size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16,
                   "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
                   "image_std": [0.5, 0.5, 0.5], "image_processor_type": "Qwen2VLImageProcessorFast",
                   "processor_class": "Qwen3VLProcessor"}


def _settings(case):
    return ImageSettings.from_preprocessor_config(META["configs"][CONFIG_OF[case]])


def _encode(array, fmt="PNG", **kwargs):
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt, **kwargs)
    return out.getvalue()


def _rng_image(h, w, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


# ---- against transformers ----

@pytest.mark.parametrize("case", CASES)
def test_pixel_values_equal_transformers(case):
    # Bit-identical: measured max |difference| 0.0 on every case (transformers 5.25, Pillow 13).
    image = REFERENCE[f"{case}_image"]
    out = preprocess(load_image(image), _settings(case))
    expected = REFERENCE[f"{case}_pixel_values"]
    assert out.grid == tuple(REFERENCE[f"{case}_grid"][0])
    assert out.pixel_values.dtype == np.float32 and out.pixel_values.flags.c_contiguous
    assert out.pixel_values.shape == expected.shape
    assert np.array_equal(out.pixel_values, expected), float(np.abs(out.pixel_values - expected).max())
    assert out.n_tokens == out.grid[1] * out.grid[2] // 4


@pytest.mark.parametrize("case", [c for c in CASES if REFERENCE[f"{c}_image"].ndim == 2
                                  or REFERENCE[f"{c}_image"].shape[2] == 4])
def test_grey_and_rgba_give_the_same_pixels_from_every_source(case):
    image = REFERENCE[f"{case}_image"]
    expected = REFERENCE[f"{case}_pixel_values"]
    for source in (Image.fromarray(image), _encode(image)):  # PIL image and a lossless PNG file
        assert np.array_equal(preprocess(load_image(source), _settings(case)).pixel_values, expected)


def test_smart_resize_equals_transformers():
    table = REFERENCE["smart_resize"]
    assert len(table) > 400
    for h, w, factor, lo, hi, out_h, out_w in table.tolist():
        if out_h == 0:  # transformers refused: aspect ratio over 200
            with pytest.raises(ImageError, match="aspect ratio"):
                smart_resize(h, w, factor, lo, hi)
        else:
            assert smart_resize(h, w, factor, lo, hi) == (out_h, out_w), (h, w, factor, lo, hi)


def test_spec_examples():
    real = ImageSettings.from_preprocessor_config(QWEN3_VL_CONFIG)
    for (h, w), size in {(75, 100): (224, 320), (80, 112): (224, 320), (400, 600): (384, 608),
                         (480, 640): (480, 640), (1080, 1920): (1088, 1920), (8000, 6000): (4704, 3520),
                         (10, 1999): (32, 3648)}.items():
        assert smart_resize(h, w, real.factor, real.min_pixels, real.max_pixels) == size
    out = preprocess(_rng_image(75, 100), real)
    assert out.grid == (1, 14, 20) and out.n_tokens == 70 and out.pixel_values.shape == (280, 1536)
    assert isinstance(out, PreprocessedImage)


def test_layout_of_patches():
    # Independent of the reference: a 64x96 image (kept as is at factor 32) whose pixel values say
    # where they come from: R = y, G = x, B = patch index r*6 + c on its 4x6 grid of 16x16 patches.
    settings = ImageSettings(patch_size=16, temporal_patch_size=2, merge_size=2, min_pixels=1024,
                             max_pixels=64 * 96, image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0))
    y, x = np.mgrid[0:64, 0:96]
    image = np.stack([y, x, (y // 16) * 6 + x // 16], axis=2).astype(np.uint8)
    out = preprocess(image, settings)
    assert out.grid == (1, 4, 6) and out.n_tokens == 6
    pv = np.round(out.pixel_values.reshape(24, 3, 2, 16, 16) * 255).astype(int)  # columns (c, t, py, px)
    assert np.array_equal(pv[:, :, 0], pv[:, :, 1])  # both frames are the image
    # rows: each 2x2 window of patches in turn, windows in raster order (not raster over patches)
    assert [int(p[2, 0, 0, 0]) for p in pv] == [0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11,
                                                12, 13, 18, 19, 14, 15, 20, 21, 16, 17, 22, 23]
    for t in (0, 1):  # row 4 is patch (0, 2): pixels y 0..15, x 32..47
        assert np.array_equal(pv[4, 0, t], y[0:16, 32:48]) and np.array_equal(pv[4, 1, t], x[0:16, 32:48])


# ---- load_image: every kind of source ----

def test_files_bytes_and_data_urls(tmp_path):
    image = _rng_image(37, 53)
    png = tmp_path / "a.png"
    png.write_bytes(_encode(image))
    for source in (str(png), png, png.read_bytes(), bytearray(png.read_bytes()),
                   "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()):
        out = load_image(source)
        assert out.dtype == np.uint8 and out.shape == (37, 53, 3) and np.array_equal(out, image)
    # base64 wrapped over lines (as some encoders write it) is fine
    wrapped = base64.encodebytes(png.read_bytes()).decode()
    assert np.array_equal(load_image("data:image/png;base64," + wrapped), image)
    jpeg = tmp_path / "a.jpg"
    jpeg.write_bytes(_encode(image, "JPEG", quality=90))
    assert np.array_equal(load_image(jpeg), np.array(Image.open(jpeg).convert("RGB")))


def test_pil_images_and_arrays():
    image = _rng_image(20, 30)
    assert np.array_equal(load_image(Image.fromarray(image)), image)
    out = load_image(image)
    assert np.array_equal(out, image) and not np.shares_memory(out, image)
    assert np.array_equal(load_image(image[:, ::-1]), image[:, ::-1])  # a non-contiguous view
    grey = image[:, :, 0]
    for source in (grey, grey[:, :, None], Image.fromarray(grey)):
        assert np.array_equal(load_image(source), np.repeat(grey[:, :, None], 3, axis=2))


def test_transparency_is_composited_onto_white(tmp_path):
    # every (value, alpha) pair: the array path (transformers' float64 formula + np.round) and the
    # PIL path (PIL.Image.alpha_composite) agree, and the ends are right
    v, a = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    rgba = np.stack([v, 255 - v, v // 2, a], axis=2).astype(np.uint8)
    from_array = load_image(rgba)
    assert np.array_equal(from_array, load_image(Image.fromarray(rgba)))
    assert np.all(from_array[:, 0] == 255) and np.array_equal(from_array[:, 255], rgba[:, 255, :3])
    expected = np.round(a[..., None] / 255 * rgba[..., :3] + (1 - a[..., None] / 255) * 255)
    assert np.array_equal(from_array, expected.astype(np.uint8))
    # files with an alpha band or palette transparency too (not dropped as load_image(path) drops it)
    path = tmp_path / "t.png"
    Image.fromarray(rgba).save(path)
    assert np.array_equal(load_image(path), from_array)
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.info["transparency"] = 0
    assert load_image(palette).tolist() == [[[255] * 3, [200, 100, 50]], [[200, 100, 50], [255] * 3]]
    la = Image.fromarray(np.stack([np.full((2, 2), 40), np.full((2, 2), 0)], axis=2).astype(np.uint8), "LA")
    assert np.all(load_image(la) == 255)


@pytest.mark.parametrize("orientation, turn", [(3, lambda a: a[::-1, ::-1]), (6, lambda a: np.rot90(a, -1)),
                                               (8, lambda a: np.rot90(a, 1))])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    path = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_rng_image(24, 40)).save(path, "JPEG", exif=exif)
    stored = np.array(Image.open(path).convert("RGB"))  # the pixels as stored, not turned
    upright = load_image(path)
    assert np.array_equal(upright, turn(stored))
    assert np.array_equal(load_image(Image.open(path)), upright)
    assert np.array_equal(load_image(path.read_bytes()), upright)
    # an image the caller already turned (the tag is gone) is not turned again
    from PIL import ImageOps
    assert np.array_equal(load_image(ImageOps.exif_transpose(Image.open(path))), upright)


# ---- errors ----

def _png_with_header_size(width, height):
    """A valid tiny PNG whose header claims width x height: decoding it would fail (no data)."""
    data = bytearray(_encode(np.zeros((1, 1, 3), np.uint8)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_error_is_a_value_error_and_an_edgemoe_error():
    assert issubclass(ImageError, ValueError) and issubclass(ImageError, EdgeMoEError)


def test_unreadable_sources(tmp_path):
    with pytest.raises(ImageError, match="no image file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="folder"):
        load_image(str(tmp_path))
    (tmp_path / "notes.txt").write_text("not an image")
    for source in (tmp_path / "notes.txt", b"hello", b"", b"\x89PNG\r\n\x1a\n" + bytes(40)):
        with pytest.raises(ImageError, match="not an image"):
            load_image(source)
    for url in ("https://example.com/cat.png", "HTTP://example.com/cat.png"):
        with pytest.raises(ImageError, match="offline"):
            load_image(url)
    with pytest.raises(ImageError, match="not supported"):
        load_image("ftp://example.com/cat.png")
    for bad in (42, None, [[0, 0, 0]]):
        with pytest.raises(ImageError, match="cannot take an image"):
            load_image(bad)


def test_damaged_files():
    png = _encode(_rng_image(60, 80))
    with pytest.raises(ImageError, match="truncated"):
        load_image(png[: len(png) // 2])
    jpeg = _encode(_rng_image(60, 80), "JPEG")
    with pytest.raises(ImageError, match="truncated"):
        load_image(jpeg[: len(jpeg) * 2 // 3])
    damaged = bytearray(png)
    damaged[len(png) // 2: len(png) // 2 + 50] = bytes(50)
    with pytest.raises(ImageError, match="corrupt|truncated"):
        load_image(bytes(damaged))


def test_data_urls():
    png = base64.b64encode(_encode(_rng_image(4, 4))).decode()
    for bad in ("data:image/png;base64,@@@@", "data:image/png;base64," + png[:-3] + "!" + png[-2:],
                "data:image/png;base64," + png[:-1]):
        with pytest.raises(ImageError, match="base64"):
            load_image(bad)
    for bad in ("data:text/plain;base64," + png, "data:image/png," + png, "data:image/png;base64"):
        with pytest.raises(ImageError, match="data:image/<type>;base64"):
            load_image(bad)
    with pytest.raises(ImageError, match="no image data"):
        load_image("data:image/png;base64,")


def test_too_large_images_are_refused_before_decoding():
    image = _rng_image(30, 40)
    for source in (image, Image.fromarray(image), _encode(image)):
        assert load_image(source, max_input_pixels=1200).shape == (30, 40, 3)
        with pytest.raises(ImageError, match="max_input_pixels"):
            load_image(source, max_input_pixels=1199)
    # A header claiming 9000x8000 (72 M pixels > the 64 Mi default, < Pillow's limit) and no data:
    # refused by the size check; decoding first would have reported it truncated instead.
    assert DEFAULT_MAX_INPUT_PIXELS < 9000 * 8000 < Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match="max_input_pixels"):
        load_image(_png_with_header_size(9000, 8000))
    # Pillow's own decompression-bomb limit: its warning (1-2x) and its error (over 2x)
    with pytest.raises(ImageError, match="too large to decode safely"):
        load_image(_png_with_header_size(10000, 10000), max_input_pixels=10 ** 9)
    with pytest.raises(ImageError, match="too large to decode safely"):
        load_image(_png_with_header_size(30000, 30000))
    for bad in (0, -5, 1.5e6, True, "100"):
        with pytest.raises(ImageError, match="max_input_pixels"):
            load_image(image, max_input_pixels=bad)


def test_empty_images():
    for source in (np.zeros((0, 5, 3), np.uint8), np.zeros((5, 0), np.uint8), Image.new("RGB", (0, 0))):
        with pytest.raises(ImageError, match="empty"):
            load_image(source)


def test_unsupported_arrays():
    for bad in (np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.uint16), np.zeros((4, 4), bool),
                np.zeros((4, 4, 3), np.int64)):
        with pytest.raises(ImageError, match="uint8"):
            load_image(bad)
    for bad in (np.zeros((3, 8, 8), np.uint8), np.zeros((8, 8, 2), np.uint8), np.zeros(8, np.uint8),
                np.zeros((2, 8, 8, 3), np.uint8)):
        with pytest.raises(ImageError, match="shape"):
            load_image(bad)


def test_preprocess_refusals():
    settings = ImageSettings.from_preprocessor_config(QWEN3_VL_CONFIG)
    with pytest.raises(ImageError, match="aspect ratio"):
        preprocess(np.zeros((1, 201, 3), np.uint8), settings)
    assert preprocess(np.zeros((1, 200, 3), np.uint8), settings).grid[0] == 1
    for bad in (np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.float32)):
        with pytest.raises(ImageError, match="uint8 RGB"):
            preprocess(bad, settings)
    with pytest.raises(ImageError, match="empty"):
        smart_resize(0, 10, 32, 1024, 4096)


# ---- settings ----

def test_settings_from_a_real_config():
    s = ImageSettings.from_preprocessor_config(QWEN3_VL_CONFIG)
    assert (s.patch_size, s.temporal_patch_size, s.merge_size) == (16, 2, 2)
    assert (s.min_pixels, s.max_pixels) == (65536, 16777216)
    assert s.image_mean == (0.5,) * 3 and s.image_std == (0.5,) * 3 and s.factor == 32


def test_settings_defaults_and_overrides_as_transformers():
    s = ImageSettings.from_preprocessor_config({})
    assert (s.patch_size, s.temporal_patch_size, s.merge_size, s.min_pixels, s.max_pixels) == (14, 2, 2, 3136, 1003520)
    assert s.image_mean == (0.48145466, 0.4578275, 0.40821073)
    assert s.image_std == (0.26862954, 0.26130258, 0.27577711)
    nulls = ImageSettings.from_preprocessor_config({"patch_size": None, "size": None, "image_mean": None})
    assert nulls == s
    # top-level min_pixels / max_pixels (Qwen2-VL configs) win over size
    s = ImageSettings.from_preprocessor_config({"size": {"shortest_edge": 100, "longest_edge": 10 ** 6},
                                                "min_pixels": 3136, "max_pixels": 12845056})
    assert (s.min_pixels, s.max_pixels) == (3136, 12845056)
    s = ImageSettings.from_preprocessor_config({"max_pixels": 50000})
    assert (s.min_pixels, s.max_pixels) == (3136, 50000)
    s = ImageSettings.from_preprocessor_config({"image_mean": 0.5, "image_std": 0.25, "do_normalize": True,
                                                "rescale_factor": 0.00392156862745098, "resample": 3})
    assert s.image_mean == (0.5,) * 3 and s.image_std == (0.25,) * 3


@pytest.mark.parametrize("change", [
    {"patch_size": 0}, {"patch_size": -16}, {"patch_size": "16"}, {"patch_size": 16.0}, {"patch_size": True},
    {"merge_size": 0}, {"temporal_patch_size": 0}, {"image_std": [0.5, 0.0, 0.5]}, {"image_std": [0.5, 0.5]},
    {"image_std": [0.5, -1, 0.5]}, {"image_std": [1e-50] * 3}, {"image_mean": [0.5, float("nan"), 0.5]},
    {"image_mean": "0.5"}, {"image_mean": [0.5, 0.5, 0.5, 0.5]},
    {"size": {"shortest_edge": 65536 * 2, "longest_edge": 65536}}, {"size": {"shortest_edge": 65536}},
    {"size": {"height": 224, "width": 224}}, {"size": {"min_pixels": 10, "max_pixels": 20}}, {"size": 448},
    {"size": {"shortest_edge": 4, "longest_edge": 1000}},  # max under one merged token (32 x 32): tokens, not pixels?
    {"min_pixels": 0}, {"max_pixels": -1},
    {"do_normalize": False}, {"do_rescale": False}, {"do_resize": False}, {"do_convert_rgb": False},
    {"rescale_factor": 1 / 127.5}, {"resample": 2},
])
def test_bad_configs_are_refused(change):
    with pytest.raises(FormatError):
        ImageSettings.from_preprocessor_config({**QWEN3_VL_CONFIG, **change})


def test_unsupported_switches_say_so():
    with pytest.raises(UnsupportedModelError, match="do_normalize"):
        ImageSettings.from_preprocessor_config({**QWEN3_VL_CONFIG, "do_normalize": False})
    with pytest.raises(FormatError, match="JSON object"):
        ImageSettings.from_preprocessor_config([QWEN3_VL_CONFIG])


def test_settings_round_trip_through_json():
    for config in [QWEN3_VL_CONFIG, *META["configs"].values()]:
        s = ImageSettings.from_preprocessor_config(config)
        back = ImageSettings.from_dict(json.loads(json.dumps(s.to_dict())))
        assert back == s and back.to_dict() == s.to_dict()
    d = ImageSettings.from_preprocessor_config(QWEN3_VL_CONFIG).to_dict()
    for bad in ({k: v for k, v in d.items() if k != "merge_size"}, {**d, "extra": 1}, {**d, "patch_size": 0}, [d]):
        with pytest.raises(FormatError):
            ImageSettings.from_dict(bad)


def test_with_max_pixels():
    s = ImageSettings.from_preprocessor_config(QWEN3_VL_CONFIG)
    small = s.with_max_pixels(200_000)
    assert (small.min_pixels, small.max_pixels) == (65536, 200_000) and s.max_pixels == 16777216
    tiny = s.with_max_pixels(32 * 32)
    assert (tiny.min_pixels, tiny.max_pixels) == (512, 1024)  # (at most half the budget)
    assert preprocess(_rng_image(300, 400), tiny).n_tokens == 1
    assert s.with_max_pixels(10 ** 9) == s  # the model's own limit stays
    out = preprocess(_rng_image(1000, 1500), small)
    assert out.n_tokens * 1024 <= 200_000
    for bad in (1023, 0, -1, 2.5e5, None, True):
        with pytest.raises(ImageError, match="at least 1024"):
            s.with_max_pixels(bad)
