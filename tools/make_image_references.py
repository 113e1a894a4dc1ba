"""Record transformers' Qwen2-VL image processor outputs for tests/test_image_preprocess.py.

    python tools/make_image_references.py   # needs the dev extra (transformers) and Pillow

Writes tests/fixtures/image_processor/reference.npz: small deterministic random uint8 images, the
pixel_values and image_grid_thw that transformers' Qwen2VLImageProcessorPil (the backend used when
torchvision is missing) gives for them, and a table of transformers' own smart_resize results.
"""
from __future__ import annotations

import json
import os

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "image_processor", "reference.npz")

# preprocessor_config.json dicts. "small": the real Qwen3-VL / Qwen3.5 config (patch 16, mean and
# std 0.5) with a small pixel budget. "clip": Qwen2-VL's patch 14 and CLIP mean/std (the class
# defaults, left out on purpose), so normalisation by per-channel values is tested too.
CONFIGS = {
    "small": {"size": {"shortest_edge": 4096, "longest_edge": 65536}, "patch_size": 16, "temporal_patch_size": 2,
              "merge_size": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
    "clip": {"min_pixels": 3136, "max_pixels": 50176},
}

# name, config, (height, width), kind. Sizes under "small" (factor 32):
#   upscale 30x40 -> 64x96 (below min_pixels); downscale 480x360 -> 288x192 (above max_pixels);
#   half_even 80x112 -> 64x128 (80/32 = 2.5 rounds to 2); unchanged 64x96 (resize is a copy);
#   tall 40x300 -> 32x288 (aspect 7.5).
CASES = [
    ("upscale", "small", (30, 40), "rgb"),
    ("downscale", "small", (480, 360), "blocky"),
    ("half_even", "small", (80, 112), "rgb"),
    ("unchanged", "small", (64, 96), "rgb"),
    ("tall", "small", (40, 300), "rgb"),
    ("grey", "small", (90, 70), "grey"),
    ("rgba", "small", (50, 80), "rgba"),
    ("clip_rgb", "clip", (100, 150), "rgb"),
    ("clip_upscale", "clip", (20, 20), "rgb"),
    ("clip_rgba", "clip", (70, 45), "rgba"),
]


def make_image(rng, shape, kind):
    h, w = shape
    if kind == "grey":
        return rng.integers(0, 256, (h, w), dtype=np.uint8)
    if kind == "blocky":  # random 8x8 blocks plus a fine periodic texture: sharp edges and high
        # frequencies for the antialiasing filter, yet it compresses (random noise would not)
        blocks = rng.integers(0, 240, (h // 8, w // 8, 3)).repeat(8, axis=0).repeat(8, axis=1)
        texture = 5 * (np.add.outer(np.arange(h), 2 * np.arange(w)) % 4)
        return (blocks + texture[:, :, None]).astype(np.uint8)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == "rgb":
        return image
    # real transparency: a fully transparent band, a fully opaque band, and random alpha elsewhere
    alpha = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
    alpha[: h // 4] = 0
    alpha[h // 4: h // 2] = 255
    return np.concatenate([image, alpha], axis=2)


def smart_resize_table():
    """Rows (height, width, factor, min_pixels, max_pixels, out_h, out_w); out = (0, 0) where
    transformers raises (aspect ratio over 200)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    real = (32, 65536, 16777216)      # Qwen3-VL / Qwen3.5 preprocessor_config
    qwen2 = (28, 3136, 12845056)      # Qwen2-VL's config
    default = (28, 3136, 1003520)     # the class defaults
    small = (32, 4096, 65536)
    rows = [(h, w, *real) for h, w in [(75, 100), (80, 112), (400, 600), (480, 640), (1080, 1920), (8000, 6000),
                                       (10, 1999), (80, 80), (3000, 2000), (16, 16), (48, 48), (112, 112),
                                       (1, 200), (1, 201), (2000, 10), (2001, 10), (10, 2001), (1, 1)]]
    rows += [(h, w, *cfg) for cfg in (qwen2, default, small) for h, w in [(400, 600), (14, 42), (42, 14), (1, 200),
                                                                          (5000, 5000), (1024, 768), (98, 70)]]
    rng = np.random.default_rng(1)
    for _ in range(400):
        h, w = (int(v) for v in np.exp(rng.uniform(0, np.log(12000), 2)).round().clip(1))
        if rng.random() < 0.4:  # a side that is an odd multiple of factor/2: a rounding tie
            h = int(rng.integers(0, 200)) * 32 + 16
        rows.append((h, w, *[real, qwen2, default, small][rng.integers(0, 4)]))
    out = []
    for h, w, factor, lo, hi in rows:
        try:
            rh, rw = smart_resize(h, w, factor=factor, min_pixels=lo, max_pixels=hi)
        except ValueError:
            rh, rw = 0, 0
        out.append((h, w, factor, lo, hi, rh, rw))
    return np.array(out, dtype=np.int64)


def main() -> None:
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    rng = np.random.default_rng(0)
    arrays = {}
    for index, (name, config, shape, kind) in enumerate(CASES):
        processor = Qwen2VLImageProcessorPil.from_dict(CONFIGS[config])
        image = make_image(rng, shape, kind)
        # transformers cannot take a 2-D array; a grey image goes in as a PIL "L" image
        given = Image.fromarray(image) if kind == "grey" else image
        out = processor(images=[given])
        if kind == "rgba":  # its PIL and array branches composite onto white the same way
            from_pil = processor(images=[Image.fromarray(image)])["pixel_values"]
            assert np.array_equal(from_pil, out["pixel_values"]), name
        assert out["pixel_values"].dtype == np.float32
        arrays[f"{name}_image"] = image
        arrays[f"{name}_pixel_values"] = out["pixel_values"]
        arrays[f"{name}_grid"] = out["image_grid_thw"]
        print(f"{name}: {shape} -> grid {out['image_grid_thw'].tolist()}")
    arrays["smart_resize"] = smart_resize_table()
    arrays["meta"] = np.array(json.dumps({"configs": CONFIGS, "cases": [[n, c] for n, c, _, _ in CASES]}))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {os.path.relpath(OUT, ROOT)}: {os.path.getsize(OUT):,} bytes, "
          f"{len(arrays['smart_resize'])} smart_resize rows")


if __name__ == "__main__":
    main()
