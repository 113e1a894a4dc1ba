"""Give an existing container low-bit copies of its experts, without the original checkpoint.

    edgemoe convert MODEL.emoe -o OUT.emoe --low-bit-copy 2

Every byte of MODEL.emoe is carried over as it is (resident tensors, expert blobs, manifest);
each expert's copy is quantized from its stored weights decoded to floats (not from the
original checkpoint's, which a conversion from the source uses: a copy of 8-bit experts is
within their rounding of that one). Copies the container already has are replaced.
"""
from __future__ import annotations

import os
import zlib
from typing import Any, Dict

import numpy as np

from ..errors import FormatError
from ..format import quant
from ..format.container import EXPERT_PARTS, ContainerWriter, open_container
from .hf import _progress, parse_low_bit_copy, write_low_bit_copy


def _read(f, offset: int, n: int, what: str) -> bytes:
    f.seek(offset)
    data = f.read(n)
    if len(data) != n:
        raise FormatError(f"{what} ends early (truncated file)")
    return data


def _payload(f, blob: Dict[str, Any], what: str) -> bytes:
    """The blob's payload, its checksum verified (a corrupt source must not become a valid copy)."""
    stored = _read(f, blob["offset"], blob["stored"] or blob["size"], what)
    if zlib.crc32(stored) != blob["crc32"]:
        raise FormatError(f"{what}: checksum mismatch: the container is corrupt; re-convert it")
    if blob["compression"] != "zstd":
        return stored
    import zstandard

    try:  # a frame states its own size: it must be the blob's, as the runtime's reader requires
        if zstandard.frame_content_size(stored) != blob["size"]:
            raise FormatError(f"{what}: the zstd frame is not of the blob's {blob['size']} bytes")
        return zstandard.ZstdDecompressor().decompress(stored, max_output_size=blob["size"])
    except zstandard.ZstdError as e:
        raise FormatError(f"{what}: corrupt zstd frame ({e})") from None


def add_low_bit_copies(src: str, out: str, bits: str, progress: bool = True) -> Dict[str, Any]:
    """Write `out`: the container `src` with a low-bit copy (`bits`: 2, 3 or 4) of every routed
    expert. Returns its config."""
    qtype = parse_low_bit_copy(bits)
    c = open_container(src)
    if os.path.abspath(out) == os.path.abspath(src):
        raise FormatError("write the container with low-bit copies to a new file (-o), not over its source")
    compress = c.manifest.get("quantization", {}).get("compression")
    compress = "zstd" if compress == "zstd" else None
    resident_at = c.sections["resident"]["offset"]
    routed = [(l, e) for l, row in enumerate(c.experts) for e in range(len(row))]
    bar = _progress(len(c.tensors) + len(routed), os.path.basename(out), progress)
    with open(src, "rb") as f, ContainerWriter(out) as writer:
        resident, crc = c.sections["resident"], 0
        for at in range(0, resident["size"], 64 << 20):  # in blocks: a resident section can be gigabytes
            crc = zlib.crc32(_read(f, resident["offset"] + at, min(64 << 20, resident["size"] - at), "the resident section"), crc)
        if crc != resident["crc32"]:
            raise FormatError(f"{src}: the resident section's checksum does not match: the container is corrupt")
        for name, t in c.tensors.items():
            data = np.frombuffer(_read(f, resident_at + t["offset"], t["nbytes"], f"tensor {name}"), np.uint8)
            writer.add_resident(name, quant.CODES[t["type"]], data, tuple(t["shape"]))
            bar.update(1)
        for l, e in routed:
            blob = c.experts[l][e]
            what = f"expert {l}/{e}"
            payload = _payload(f, blob, what)
            full_type = quant.CODES[blob["type"]]
            parts, weights = {}, {}
            for p in EXPERT_PARTS:
                part = blob["parts"][p]
                raw = np.frombuffer(payload, np.uint8, part["nbytes"], part["offset"])
                parts[p] = (raw, tuple(part["shape"]))
                weights[p] = quant.dequantize(raw, full_type, tuple(part["shape"]))
            writer.add_expert(l, e, full_type, parts, compress=compress)
            write_low_bit_copy(writer, l, e, weights, qtype, compress)
            bar.update(1)
        manifest = {k: v for k, v in c.manifest.items() if k != "format_version"}
        manifest["quantization"] = dict(manifest.get("quantization", {}), low_bit_copy=quant.NAMES[qtype])
        writer.finish(dict(c.config), manifest)
    bar.close()
    return dict(c.config)
