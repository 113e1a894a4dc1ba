"""Qwen2-VL-style image preprocessing (Qwen3-VL-MoE, Qwen3.5-MoE): docs/VISION_MODELS.md section 2.

smart_resize picks a size that is a multiple of patch_size*merge_size within the pixel budget;
Pillow's bicubic resizes the uint8 image; each byte is rescaled and normalised; the result is cut
into patches in merge-window order. The pixel values are bit-identical to transformers'
Qwen2VLImageProcessorPil (its backend without torchvision) for the same uint8 RGB input; its
torchvision backend resizes differently and can differ by 1 uint8 step (docs, section 2 step 2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
from PIL import Image

from ..errors import FormatError, ImageError, UnsupportedModelError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Qwen2VLImageProcessor's class defaults, for keys a preprocessor_config.json leaves out (or sets
# to null). Real Qwen3-VL / Qwen3.5 configs set them all (patch 16, mean and std 0.5), so a default
# used here usually means an older, Qwen2-VL-style config.
_DEFAULTS = dict(patch_size=14, temporal_patch_size=2, merge_size=2, min_pixels=56 * 56, max_pixels=28 * 28 * 1280,
                 image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)

# Config switches that change the computation; only transformers' defaults are implemented here.
_FIXED = {"do_resize": True, "do_rescale": True, "do_normalize": True, "do_convert_rgb": True,
          "resample": 3,  # PIL BICUBIC
          "rescale_factor": 1 / 255}


@dataclass(frozen=True)
class ImageSettings:
    """How a model's images are resized and cut into patches. Construct with from_preprocessor_config
    (a Hugging Face preprocessor_config.json) or from_dict (our manifest); invalid values raise FormatError."""
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    min_pixels: int
    max_pixels: int
    image_mean: tuple
    image_std: tuple

    def __post_init__(self):
        for name in ("patch_size", "temporal_patch_size", "merge_size", "min_pixels", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise FormatError(f"image settings: {name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "image_mean", _three_floats("image_mean", self.image_mean, positive=False))
        object.__setattr__(self, "image_std", _three_floats("image_std", self.image_std, positive=True))
        if self.min_pixels > self.max_pixels:
            raise FormatError(f"image settings: min_pixels {self.min_pixels} is above max_pixels {self.max_pixels}")
        if self.max_pixels < self.factor ** 2:
            raise FormatError(f"image settings: max_pixels {self.max_pixels} is less than one merged token "
                              f"({self.factor}x{self.factor} pixels); the value must count pixels, not tokens")

    @property
    def factor(self) -> int:
        """Side of one merged token in pixels: resized sides are multiples of it."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_preprocessor_config(cls, config: dict) -> "ImageSettings":
        """Read a preprocessor_config.json dict as Qwen2VLImageProcessor(Pil).__init__ does."""
        if not isinstance(config, dict):
            raise FormatError(f"preprocessor_config.json must hold a JSON object, got {type(config).__name__}")
        for key, wanted in _FIXED.items():
            value = config.get(key)
            if value is not None and value != wanted:
                raise UnsupportedModelError(f"preprocessor_config.json sets {key}={value!r}; only {wanted!r} "
                                            "(transformers' default) is supported")

        def get(key):
            value = config.get(key)  # null means "the default", as in transformers
            return _DEFAULTS[key] if value is None else value

        # The pixel budget is size.shortest_edge / size.longest_edge (in pixels, despite the names).
        # Top-level min_pixels / max_pixels (older configs) override them, as in __init__.
        size = config.get("size")
        if size is None:
            min_pixels, max_pixels = _DEFAULTS["min_pixels"], _DEFAULTS["max_pixels"]
        elif isinstance(size, dict):
            min_pixels, max_pixels = size.get("shortest_edge"), size.get("longest_edge")
        else:
            raise FormatError(f"preprocessor_config.json: size must be an object, got {size!r}")
        if config.get("min_pixels") is not None:
            min_pixels = config["min_pixels"]
        if config.get("max_pixels") is not None:
            max_pixels = config["max_pixels"]
        if min_pixels is None or max_pixels is None:
            # transformers' resize refuses such a config too (it needs both values)
            raise FormatError(f"preprocessor_config.json: the pixel budget needs size.shortest_edge and "
                              f"size.longest_edge, or min_pixels and max_pixels; got size={size!r}")
        return cls(patch_size=get("patch_size"), temporal_patch_size=get("temporal_patch_size"),
                   merge_size=get("merge_size"), min_pixels=min_pixels, max_pixels=max_pixels,
                   image_mean=get("image_mean"), image_std=get("image_std"))

    def to_dict(self) -> dict:
        """JSON-ready, for the model file's manifest; from_dict reads it back exactly."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["image_mean"], out["image_std"] = list(self.image_mean), list(self.image_std)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ImageSettings":
        if not isinstance(data, dict):
            raise FormatError(f"image settings must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            missing, unknown = sorted(names - set(data)), sorted(set(data) - names)
            raise FormatError(f"image settings: missing keys {missing}, unknown keys {unknown}")
        return cls(**data)

    def with_max_pixels(self, max_pixels: int) -> "ImageSettings":
        """These settings with a pixel budget of at most max_pixels per image (bounds the vision tower's
        memory and time). A value above the model's own max_pixels leaves the settings unchanged."""
        one_token = self.factor ** 2
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < one_token:
            raise ImageError(f"max image pixels must be an integer of at least {one_token} (one image token, "
                             f"{self.factor}x{self.factor} pixels), got {max_pixels!r}")
        if max_pixels >= self.max_pixels:
            return self
        # (at most half the budget: smart_resize rounds an upscaled image's sides up, which could
        # otherwise take a small image past the budget)
        return replace(self, max_pixels=int(max_pixels), min_pixels=min(self.min_pixels, int(max_pixels) // 2))


def _three_floats(name: str, value, positive: bool) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3  # transformers accepts one number for all channels
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise FormatError(f"image settings: {name} must be 3 numbers (one per RGB channel), got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise FormatError(f"image settings: {name} must be 3 finite numbers, got {value!r}")
        # the arithmetic is float32 (as transformers'), so the float32 value must be usable
        if positive and not np.float32(v) > 0:
            raise FormatError(f"image settings: {name} must be 3 positive numbers, got {value!r}")
        out.append(float(v))
    return tuple(out)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple:
    """(h, w) to resize an image to: multiples of factor, about min_pixels..max_pixels pixels, aspect
    ratio kept as well as can be. transformers.models.qwen2_vl's smart_resize line by line: Python's
    round() is half to even (400/32 = 12.5 gives 12), and the limits are float computations."""
    if height <= 0 or width <= 0:
        raise ImageError(f"an image of {height}x{width} pixels is empty")
    if max(height, width) / min(height, width) > 200:
        raise ImageError(f"the image is {height}x{width} pixels: its aspect ratio "
                         f"{max(height, width) / min(height, width):.1f} is over 200, which the model's "
                         "preprocessing refuses; crop or pad it")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class PreprocessedImage:
    """pixel_values float32 [grid_h*grid_w, 3*T*P*P]: one row per patch in merge-window order (each
    merge_size x merge_size window of patches is contiguous; windows go in raster order), columns
    (channel, t, py, px), the still image repeated over the T frames. grid = (1, grid_h, grid_w) in patches."""
    pixel_values: np.ndarray
    grid: tuple
    merge_size: int

    @property
    def n_tokens(self) -> int:
        """How many image tokens (<|image_pad|>) the image becomes in the prompt."""
        return self.grid[0] * self.grid[1] * self.grid[2] // self.merge_size ** 2


def preprocess(image_u8: np.ndarray, settings: ImageSettings) -> PreprocessedImage:
    """Resize, normalise and patchify a uint8 RGB [H, W, 3] image (what load_image returns)."""
    image = np.asarray(image_u8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"preprocess takes a uint8 RGB [H, W, 3] array (what load_image returns), got "
                         f"{image.dtype} {image.shape}")
    P, T, m = settings.patch_size, settings.temporal_patch_size, settings.merge_size
    height, width = smart_resize(image.shape[0], image.shape[1], settings.factor,
                                 settings.min_pixels, settings.max_pixels)
    # transformers' PIL backend resizes the uint8 image with Pillow (bicubic, antialiased, no
    # reducing_gap), so the resized image is uint8, rounded and clamped by Pillow.
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((width, height), Image.Resampling.BICUBIC))
    grid_h, grid_w = height // P, width // P
    # Rows in merge-window order: [H, W, C] = [bh, ih, py, bw, iw, px, C] -> [bh, bw, ih, iw, C, py, px]
    # (transformers' patchify does the same from channels-first). Still uint8 here: 1 byte an element.
    patches = resized.reshape(grid_h // m, m, P, grid_w // m, m, P, 3).transpose(0, 3, 1, 4, 6, 2, 5)
    patches = patches.reshape(grid_h * grid_w, 3, 1, P * P)
    table = _value_table(settings)
    pixel_values = np.empty((grid_h * grid_w, 3, T, P * P), np.float32)
    for c in range(3):
        pixel_values[:, c] = table[c][patches[:, c]]  # broadcast over T: every frame is the same image
    return PreprocessedImage(pixel_values.reshape(grid_h * grid_w, 3 * T * P * P), (1, grid_h, grid_w), m)


def _value_table(settings: ImageSettings) -> np.ndarray:
    """[3, 256] float32: the normalised value of each byte value per channel.

    transformers computes u8 -> float64 * (1/255) -> float32 (rescale), then (x - mean) / std in
    float32 with float32 mean and std (normalize). Each result depends only on (channel, byte), so
    this table, made with exactly those operations, gives the same bits without a float64 image."""
    scaled = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    mean = np.array(settings.image_mean, dtype=np.float32)[:, None]
    std = np.array(settings.image_std, dtype=np.float32)[:, None]
    return (scaled[None, :] - mean) / std
