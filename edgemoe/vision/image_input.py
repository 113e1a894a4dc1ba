"""Turn a user's image (file, encoded bytes, data URL, PIL image or array) into uint8 RGB [H, W, 3].

What happens to the pixels follows transformers, so that the preprocessing after it
(edgemoe.vision.preprocess) sees what transformers' Qwen2-VL image processor would see:
- an encoded image is rotated upright by its EXIF Orientation tag, as
  transformers.image_utils.load_image does (phone cameras store the sensor's pixels plus that tag);
- transparency is composited onto white, as the processor's convert_to_rgb does (PIL images with
  PIL's alpha_composite, uint8 RGBA arrays with its float64 formula and np.round);
- grey becomes R = G = B.

One difference on purpose: transformers' load_image, given a path or a URL, calls
`.convert("RGB")`, which drops alpha and shows whatever colour hides under transparent pixels.
We composite onto white for every source, as the processor does for a PIL or array image. For an
opaque image the two are the same.

Every failure raises edgemoe.errors.ImageError with what was wrong and what to do about it.
"""
from __future__ import annotations

import base64
import binascii
import io
import os
import re
import warnings

import numpy as np
from PIL import Image, ImageOps

from ..errors import ImageError

# 64 Mi pixels (67.1 M): more than a full-resolution photo from nearly any camera (phones save
# 12-50 MP by default, full-frame bodies up to 61 MP), yet the decoded RGBA copy (256 MiB) still
# fits a phone's memory. It is also below Pillow's own decompression-bomb limit
# (Image.MAX_IMAGE_PIXELS, 89.5 M), so with the default our check, with its clearer message, is
# the one a user meets. The model itself sees at most its max_pixels (16.8 M for Qwen3-VL).
DEFAULT_MAX_INPUT_PIXELS = 64 * 1024 * 1024

# "scheme://" at the start of a string. Two letters at least, so a Windows drive ("C://x") is a path.
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def load_image(source, max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS) -> np.ndarray:
    """The image `source` as a new uint8 RGB array [H, W, 3], upright and without transparency.

    `source`: a path (str or os.PathLike) to an image file; `bytes` of an encoded image file; a
    `data:image/...;base64,...` URL; a PIL.Image.Image; or a uint8 numpy array [H, W, 3] (RGB),
    [H, W] or [H, W, 1] (grey) or [H, W, 4] (RGBA). Remote URLs are refused: a device may be
    offline, so download the file first.
    `max_input_pixels`: refuse images with more pixels than this (checked on the file's header,
    before decoding anything). Pillow's own limit, Image.MAX_IMAGE_PIXELS, applies as well.
    """
    if (isinstance(max_input_pixels, bool) or not isinstance(max_input_pixels, (int, np.integer))
            or max_input_pixels <= 0):
        raise ImageError(f"max_input_pixels must be a positive int, got {max_input_pixels!r}")
    max_input_pixels = int(max_input_pixels)
    if isinstance(source, np.ndarray):
        return _from_array(source, max_input_pixels)
    if isinstance(source, Image.Image):
        return _from_pil(source, "the PIL image", max_input_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _decode(lambda: io.BytesIO(data), "the image bytes", max_input_pixels)
    if isinstance(source, str):
        if source[:5].lower() == "data:":
            data = _data_url_bytes(source)
            return _decode(lambda: io.BytesIO(data), "the data URL's image", max_input_pixels)
        scheme = _URL_SCHEME.match(source)
        if scheme:
            if scheme.group(1).lower() in ("http", "https"):
                raise ImageError(f"{_short(source)} is a remote URL: only local image files and data:image/...;base64 "
                                 "URLs are accepted, because a device may be offline. Download the image first.")
            raise ImageError(f"{_short(source)}: {scheme.group(1)}:// URLs are not supported; "
                             "give a local file path or a data:image/...;base64 URL")
        return _from_path(source, max_input_pixels)
    if isinstance(source, os.PathLike):
        return _from_path(os.fsdecode(os.fspath(source)), max_input_pixels)
    raise ImageError(f"cannot take an image from a {type(source).__name__}: give a file path, encoded bytes, a "
                     "data:image/...;base64 URL, a PIL image or a uint8 numpy array")


def _short(text: str, limit: int = 120) -> str:
    """repr(text), cut short: messages must not echo a megabyte of base64 back."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _from_path(path: str, max_pixels: int) -> np.ndarray:
    what = _short(path)
    if not os.path.exists(path):
        raise ImageError(f"no image file at {what}: check the path (only local files and "
                         "data:image/...;base64 URLs are accepted)")
    if os.path.isdir(path):
        raise ImageError(f"{what} is a folder, not an image file")
    return _decode(lambda: open(path, "rb"), what, max_pixels)


def _data_url_bytes(url: str) -> bytes:
    header, comma, payload = url.partition(",")
    media = header.lower()
    if not comma or not media.startswith("data:image/") or not media.endswith(";base64"):
        raise ImageError(f"a data URL must look like data:image/<type>;base64,<data>; this one starts "
                         f"{_short(header, 60)}")
    try:
        # validate=True: a stray character means a damaged payload; don't silently skip it
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageError(f"the data URL's base64 data is invalid ({e}): the string is damaged or cut short") from None
    if not data:
        raise ImageError("the data URL holds no image data")
    return data


def _decode(open_file, what: str, max_pixels: int) -> np.ndarray:
    """Open (open_file() gives a binary file) and fully decode an encoded image, refusing it before
    decoding when it is too large."""
    try:
        fp = open_file()
    except OSError as e:
        raise ImageError(f"cannot read {what}: {e.strerror or e}") from None
    with fp, warnings.catch_warnings():
        # Pillow warns (1-2x its limit) or raises (above 2x) for decompression bombs; turn the
        # warning into an error, so a huge image is refused rather than decoded with a warning.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(fp)  # reads the header only
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(f"{what} is too large to decode safely: {e}") from None
        except Image.UnidentifiedImageError:
            raise ImageError(f"{what} is not an image Pillow can read (PNG, JPEG, WebP, GIF, BMP, TIFF, ...), "
                             "or its header is corrupt") from None
        except MemoryError:
            raise
        except Exception as e:
            raise ImageError(f"{what} cannot be read: {_describe(e)}") from None
        with image:
            return _from_pil(image, what, max_pixels)


def _from_pil(image: Image.Image, what: str, max_pixels: int) -> np.ndarray:
    width, height = image.size
    _check_size(width, height, what, max_pixels)
    try:
        # Decode every pixel now: a truncated file fails here rather than giving a half-grey image
        # (ImageFile.LOAD_TRUNCATED_IMAGES stays off).
        image.load()
    except MemoryError:
        raise
    except OSError as e:
        if "truncated" in str(e).lower():
            raise ImageError(f"{what} is truncated: the file ends before its image data does (cut off while "
                             "copying or downloading?); use a complete copy") from None
        raise ImageError(f"{what} is corrupt: {_describe(e)}") from None
    except Exception as e:
        raise ImageError(f"{what} is corrupt or cannot be decoded: {_describe(e)}") from None
    try:
        return _pil_to_rgb(image)
    except MemoryError:
        raise
    except Exception as e:
        raise ImageError(f"{what} cannot be converted to RGB: {_describe(e)}") from None


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    # transformers.image_utils.load_image: upright by the EXIF Orientation tag. It also removes the
    # tag, so an image the caller already turned is not turned twice.
    image = ImageOps.exif_transpose(image)
    # transformers.image_transforms.convert_to_rgb, PIL branch: any alpha band or palette
    # transparency is composited onto opaque white with PIL's own rounding.
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    rgb = np.array(image.convert("RGB"))
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:  # not expected from Pillow; never pass it on
        raise ValueError(f"RGB conversion gave {rgb.dtype} {rgb.shape}")
    return rgb


def _from_array(array: np.ndarray, max_pixels: int) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ImageError(f"an image array must be uint8 (0-255), got {array.dtype}; convert it first, e.g. "
                         "np.round(x * 255).astype(np.uint8) for floats in [0, 1]")
    grey = array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 1)
    if not grey and not (array.ndim == 3 and array.shape[2] in (3, 4)):
        raise ImageError(f"an image array must be [H, W, 3] RGB, [H, W] grey or [H, W, 4] RGBA, got shape "
                         f"{array.shape} (a channels-first [3, H, W] array needs .transpose(1, 2, 0))")
    height, width = array.shape[:2]
    _check_size(width, height, "the image array", max_pixels)
    if grey:
        return np.repeat(array.reshape(height, width, 1), 3, axis=2)
    if array.shape[2] == 4:
        # transformers.image_transforms.convert_to_rgb, numpy branch, step by step (float64, then
        # np.round = half to even). Over all 256x256 (value, alpha) pairs it equals PIL's alpha_composite.
        alpha = array[..., 3:4] / 255
        composite = alpha * array[..., :3] + (1 - alpha) * 255
        return np.round(composite).astype(np.uint8)
    return np.array(array, dtype=np.uint8, order="C")  # a copy: never alias the caller's array


def _check_size(width: int, height: int, what: str, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"{what} is empty ({width}x{height} pixels)")
    if width * height > max_pixels:
        raise ImageError(f"{what} is {width}x{height} = {width * height:,} pixels, more than max_input_pixels "
                         f"= {max_pixels:,}: shrink it first, or raise max_input_pixels if the device has the memory")


def _describe(e: Exception) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
