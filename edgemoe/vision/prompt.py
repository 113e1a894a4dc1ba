"""Images in a prompt: each image's placeholder token expanded to its image tokens, and the runs of
image tokens matched to the images whose features stand in for them (the engine's spans)."""
from __future__ import annotations

import hashlib
from typing import Any, List, NamedTuple, Sequence, Tuple

import numpy as np

from ..errors import ImageError


class EncodedImage(NamedTuple):
    """One image through the vision tower (edgemoe.Model.encode_image)."""
    features: np.ndarray  # [grid_h * grid_w, image_feature_width] float32: the image tokens' rows
    grid_h: int           # the merged grid: the image's tokens, raster order
    grid_w: int
    digest: str           # of its pixels: tells a context's image from another of the same size

    @property
    def n_tokens(self) -> int:
        return self.grid_h * self.grid_w


def pixels_digest(pixel_values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixel_values).tobytes()).hexdigest()[:32]


def image_runs(ids: Sequence[int], image_token: int) -> List[Tuple[int, int]]:
    """(start, length) of each run of image tokens in ids."""
    runs: List[Tuple[int, int]] = []
    for i, t in enumerate(ids):
        if t != image_token:
            continue
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


def expand_placeholders(ids: Sequence[int], images: Sequence[EncodedImage], image_token: int,
                        start_token: int, end_token: int, place_missing: bool = True) -> List[int]:
    """ids with each image's placeholder (one image token, as chat templates write it) made its
    n_tokens image tokens; a run already that long stays. Without any placeholder (and with
    place_missing), each image goes first, between start_token and end_token (what a template puts
    around one)."""
    ids = [int(t) for t in ids]
    runs = image_runs(ids, image_token)
    if not runs and images and place_missing:
        block = []
        for image in images:
            block += ([start_token] if start_token >= 0 else []) + [image_token] + ([end_token] if end_token >= 0 else [])
        ids, runs = block + ids, image_runs(block + ids, image_token)
    if len(runs) != len(images):
        raise ImageError(f"the prompt has {len(runs)} image placeholder(s) for {len(images)} image(s)")
    out, at = [], 0
    for (start, length), image in zip(runs, images):
        if length not in (1, image.n_tokens):
            raise ImageError(f"an image of {image.n_tokens} tokens meets a run of {length} image tokens")
        out += ids[at:start] + [image_token] * image.n_tokens
        at = start + length
    return out + ids[at:]


def check_images(ids: Sequence[int], images: Sequence[EncodedImage], image_token: int) -> List[Tuple[int, int]]:
    """The runs of image tokens in ids, one per image and as long as its tokens (else ImageError)."""
    runs = image_runs(ids, image_token)
    if len(runs) != len(images):
        raise ImageError(f"the tokens hold {len(runs)} image(s) for {len(images)} given")
    for (_, length), image in zip(runs, images):
        if length != image.n_tokens:
            raise ImageError(f"an image of {image.n_tokens} tokens meets a run of {length} image tokens")
    return runs


def image_spans(ids: Sequence[int], images: Sequence[EncodedImage],
                image_token: int) -> List[Tuple[int, int, int, np.ndarray]]:
    """The engine's spans (first token, grid_h, grid_w, features) of the images of ids."""
    runs = check_images(ids, images, image_token)
    return [(start, image.grid_h, image.grid_w, image.features) for (start, _), image in zip(runs, images)]


def images_from(keep: int, ids: Sequence[int], images: Sequence[EncodedImage], image_token: int) -> List[EncodedImage]:
    """The images of ids[keep:] (keep not inside an image: cut_before_images; ids a prompt, or the
    part of one being evaluated again)."""
    return [image for (start, length), image in zip(image_runs(ids, image_token), images)
            if start >= keep and length == image.n_tokens]


def prompt_keys(ids: Sequence[int], images: Sequence[EncodedImage], image_token: int) -> List[Any]:
    """ids with each image token made (its image's digest, its index): equal keys mean the same
    context, so a reused context keeps only what was computed from the same images."""
    keys: List[Any] = [int(t) for t in ids]
    for (start, length), image in zip(image_runs(ids, image_token), images):
        for j in range(length):
            keys[start + j] = (image.digest, j)
    return keys


def cut_before_images(keep: int, ids: Sequence[int], image_token: int) -> int:
    """keep, or the start of the image run it falls inside (an image is evaluated whole)."""
    for start, length in image_runs(ids, image_token):
        if start < keep < start + length:
            return start
    return keep
