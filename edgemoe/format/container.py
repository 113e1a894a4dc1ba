"""The .emoe container: the only Python module that knows its byte layout.

Layout (docs/FORMAT.md has the byte-by-byte description):

    [header page, 4096 bytes] [resident section] [expert section] [manifest JSON] [pad to 4096]

The header is written last, so a file whose header is missing or whose CRC
does not match is never mistaken for a complete container. Writers work on a
temporary file next to the destination and rename it into place at the end.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Dict, Optional, Tuple

import numpy as np

from . import quant
from ..errors import FormatError
from .model_config import validate_config

MAGIC = b"EDGEMOE\0"
FORMAT_VERSION = 1
PAGE = 4096           # expert blobs start on this boundary (direct I/O)
TENSOR_ALIGN = 64     # resident tensors and expert parts start on this boundary (SIMD loads)
EXPERT_PARTS = ("gate", "up", "down")
ZSTD_LEVEL = 3  # higher levels gain well under 1 % more on quantized codes (bench/zstd_ratio.py)

# magic, version, flags, manifest (offset, size, crc), resident crc,
# resident (offset, size), experts (offset, size)
_HEADER = struct.Struct("<8sII QQI I QQ QQ")
_HEADER_CRC = struct.Struct("<I")
HEADER_BYTES = _HEADER.size + _HEADER_CRC.size
MAX_MANIFEST_BYTES = 256 << 20  # a manifest holds the tokenizer, not weights


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


@dataclass
class Header:
    version: int
    manifest_offset: int
    manifest_size: int
    manifest_crc: int
    resident_crc: int
    resident_offset: int
    resident_size: int
    experts_offset: int
    experts_size: int


# ---------------------------------------------------------------- writing


class ContainerWriter:
    """Streams a container to disk: resident tensors first, then expert blobs, then the manifest.

    Use as a context manager: on an exception the temporary file is removed,
    so an interrupted conversion leaves nothing that looks like a model.
    """

    def __init__(self, path: str):
        self.path = os.fspath(path)
        self.tmp_path = self.path + ".partial"
        self._f: Optional[BinaryIO] = open(self.tmp_path, "wb")
        self._f.write(b"\0" * PAGE)  # header placeholder, written at finish()
        self.resident: Dict[str, Dict[str, Any]] = {}
        self.experts: Dict[Tuple[int, int], Dict[str, Any]] = {}
        self._resident_offset = PAGE
        self._resident_crc = 0
        self._resident_open = True
        self._experts_offset: Optional[int] = None

    def __enter__(self) -> "ContainerWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def _tell(self) -> int:
        return self._f.tell()

    def _pad_to(self, align: int, crc_resident: bool = False) -> None:
        pad = _align(self._tell(), align) - self._tell()
        if pad:
            zeros = b"\0" * pad
            self._f.write(zeros)
            if crc_resident:
                self._resident_crc = zlib.crc32(zeros, self._resident_crc)

    def add_resident(self, name: str, qtype: int, data: np.ndarray, shape: Tuple[int, ...]) -> None:
        """Append one resident tensor, already encoded (flat uint8 bytes of `qtype`)."""
        if not self._resident_open:
            raise RuntimeError("resident tensors must all be written before the first expert")
        if name in self.resident:
            raise RuntimeError(f"resident tensor {name} written twice")
        self._pad_to(TENSOR_ALIGN, crc_resident=True)
        buf = memoryview(np.ascontiguousarray(data).view(np.uint8)).cast("B")
        offset = self._tell() - self._resident_offset
        self._f.write(buf)
        self._resident_crc = zlib.crc32(buf, self._resident_crc)
        self.resident[name] = {
            "type": quant.NAMES[qtype],
            "shape": [int(s) for s in shape],
            "offset": offset,
            "nbytes": len(buf),
        }

    def _close_resident(self) -> None:
        if self._resident_open:
            self._pad_to(PAGE, crc_resident=True)
            self._resident_size = self._tell() - self._resident_offset
            self._resident_open = False
            self._experts_offset = self._tell()

    def add_expert(self, layer: int, expert: int, qtype: int, parts: Dict[str, Tuple[np.ndarray, Tuple[int, int]]],
                   compress: Optional[str] = None) -> None:
        """Append one routed expert as a single page-aligned blob of its gate, up and down projections.
        compress="zstd" stores the blob zstd-compressed when that makes it smaller."""
        self._close_resident()
        key = (layer, expert)
        if key in self.experts:
            raise RuntimeError(f"expert {layer}/{expert} written twice")
        raw = bytearray()
        part_table = {}
        for part in EXPERT_PARTS:
            data, shape = parts[part]
            raw += b"\0" * (_align(len(raw), TENSOR_ALIGN) - len(raw))
            buf = memoryview(np.ascontiguousarray(data).view(np.uint8)).cast("B")
            part_table[part] = {"offset": len(raw), "nbytes": len(buf), "shape": [int(s) for s in shape]}
            raw += buf
        stored = bytes(raw)
        entry: Dict[str, Any] = {"type": quant.NAMES[qtype], "parts": part_table, "size": len(raw)}
        if compress == "zstd":
            import zstandard

            # the frame checksum lets the decoder itself catch corruption when CRC checks are off
            packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(stored)
            if len(packed) < len(stored):
                stored = packed
                entry.update(compression="zstd", stored=len(packed))
        elif compress is not None:
            raise ValueError(f"unknown compression {compress!r} (available: zstd)")
        self._pad_to(PAGE)
        entry.update(offset=self._tell(), crc32=zlib.crc32(stored))
        self._f.write(stored)
        self.experts[key] = entry

    def finish(self, manifest: Dict[str, Any]) -> None:
        """Write the manifest and the header, flush to disk, and rename into place."""
        self._close_resident()
        self._pad_to(PAGE)
        experts_size = self._tell() - self._experts_offset
        n_layers = manifest["config"]["n_layers"]
        n_experts = manifest["config"]["n_experts"]
        missing = [(l, e) for l in range(n_layers) for e in range(n_experts) if (l, e) not in self.experts]
        if missing:
            raise RuntimeError(f"{len(missing)} experts were never written, first {missing[0]}")
        manifest = dict(manifest)
        manifest["format_version"] = FORMAT_VERSION
        manifest["resident"] = self.resident
        manifest["experts"] = [[self.experts[(l, e)] for e in range(n_experts)] for l in range(n_layers)]
        blob = json.dumps(manifest, separators=(",", ":")).encode("utf-8")
        manifest_offset = self._tell()
        self._f.write(blob)
        self._pad_to(PAGE)
        header = _HEADER.pack(
            MAGIC, FORMAT_VERSION, 0,
            manifest_offset, len(blob), zlib.crc32(blob), self._resident_crc,
            self._resident_offset, self._resident_size, self._experts_offset, experts_size,
        )
        self._f.seek(0)
        self._f.write(header + _HEADER_CRC.pack(zlib.crc32(header)))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None
        os.replace(self.tmp_path, self.path)

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        try:
            os.unlink(self.tmp_path)
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------- reading


@dataclass
class Container:
    path: str
    header: Header
    manifest: Dict[str, Any]
    file_size: int

    @property
    def config(self) -> Dict[str, Any]:
        return self.manifest["config"]


def _read_header(f: BinaryIO, path: str, file_size: int) -> Header:
    raw = f.read(HEADER_BYTES)
    if len(raw) < len(MAGIC) or raw[: len(MAGIC)] != MAGIC:
        raise FormatError(f"{path}: not an EdgeMoE container (bad magic); convert the model with `edgemoe convert`")
    if len(raw) < HEADER_BYTES:
        raise FormatError(f"{path}: truncated container header")
    fields = _HEADER.unpack(raw[: _HEADER.size])
    (crc,) = _HEADER_CRC.unpack(raw[_HEADER.size:])
    version = fields[1]
    if version != FORMAT_VERSION:
        raise FormatError(
            f"{path}: container format version {version} is not supported by this edgemoe "
            f"(which reads version {FORMAT_VERSION}); re-convert the model or upgrade edgemoe"
        )
    if zlib.crc32(raw[: _HEADER.size]) != crc:
        raise FormatError(f"{path}: container header checksum mismatch (corrupt or incompletely written file)")
    h = Header(version, *fields[3:])
    sections = [
        ("manifest", h.manifest_offset, h.manifest_size),
        ("resident section", h.resident_offset, h.resident_size),
        ("expert section", h.experts_offset, h.experts_size),
    ]
    for what, off, size in sections:
        if off < PAGE or off + size > file_size:
            raise FormatError(f"{path}: {what} [{off}, {off + size}) lies outside the file of {file_size} bytes (truncated?)")
    expected = _align(h.manifest_offset + h.manifest_size, PAGE)
    if file_size < expected:
        raise FormatError(f"{path}: file is {file_size} bytes but its header describes {expected} (truncated?)")
    if h.resident_offset % PAGE or h.experts_offset % PAGE:
        raise FormatError(f"{path}: sections are not page aligned")
    if h.manifest_size > MAX_MANIFEST_BYTES:
        raise FormatError(f"{path}: manifest of {h.manifest_size} bytes is implausibly large")
    return h


def _expect(cond: bool, path: str, msg: str) -> None:
    if not cond:
        raise FormatError(f"{path}: invalid manifest: {msg}")


def _check_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _validate_tensor(path: str, name: str, t: Any, region: int, page_aligned: bool = False) -> None:
    _expect(isinstance(t, dict), path, f"tensor {name} is not an object")
    qname = t.get("type")
    _expect(qname in quant.CODES, path, f"tensor {name} has unknown type {qname!r}")
    shape = t.get("shape")
    _expect(isinstance(shape, list) and len(shape) in (1, 2) and all(_check_int(s) and s > 0 for s in shape),
            path, f"tensor {name} has a bad shape {shape!r}")
    for key in ("offset", "nbytes"):
        _expect(_check_int(t.get(key)), path, f"tensor {name} has a bad {key}")
    rows = shape[0] if len(shape) == 2 else 1
    cols = shape[-1]
    code = quant.CODES[qname]
    _expect(quant.supports(code, cols), path, f"tensor {name}: type {qname} cannot hold rows of {cols}")
    _expect(t["nbytes"] == rows * quant.row_bytes(code, cols), path, f"tensor {name}: nbytes does not match its shape and type")
    _expect(t["offset"] + t["nbytes"] <= region, path, f"tensor {name} extends past the end of its section")


def _validate_manifest(path: str, m: Any, h: Header) -> None:
    _expect(isinstance(m, dict), path, "not a JSON object")
    m["config"] = validate_config(m.get("config"), path)
    cfg = m["config"]
    resident = m.get("resident")
    _expect(isinstance(resident, dict), path, "no resident tensor table")
    for name, t in resident.items():
        _validate_tensor(path, name, t, h.resident_size)
    experts = m.get("experts")
    _expect(isinstance(experts, list) and len(experts) == cfg["n_layers"], path, "expert table does not have one row per layer")
    for l, row in enumerate(experts):
        _expect(isinstance(row, list) and len(row) == cfg["n_experts"], path, f"layer {l} expert row has the wrong length")
        for e, blob in enumerate(row):
            where = f"expert {l}/{e}"
            _expect(isinstance(blob, dict), path, f"{where} is not an object")
            for key in ("offset", "size", "crc32"):
                _expect(_check_int(blob.get(key)), path, f"{where} has a bad {key}")
            _expect(blob["offset"] % PAGE == 0, path, f"{where} is not page aligned")
            on_disk = blob["size"]
            if "compression" in blob or "stored" in blob:
                _expect(blob.get("compression") == "zstd", path, f"{where} has unknown compression {blob.get('compression')!r}")
                _expect(_check_int(blob.get("stored")) and blob["stored"] > 0, path, f"{where} has a bad stored size")
                on_disk = blob["stored"]
            _expect(h.experts_offset <= blob["offset"] and blob["offset"] + on_disk <= h.experts_offset + h.experts_size,
                    path, f"{where} lies outside the expert section")
            parts = blob.get("parts")
            _expect(isinstance(parts, dict) and set(parts) == set(EXPERT_PARTS), path, f"{where} needs parts {EXPERT_PARTS}")
            for part in EXPERT_PARTS:
                p = dict(parts[part], type=blob.get("type"))
                _validate_tensor(path, f"{where}.{part}", p, blob["size"])


def open_container(path: str) -> Container:
    """Read and validate the header and manifest. Raises FormatError on anything malformed."""
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FormatError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise FormatError(f"{path} is a directory; convert it first with `edgemoe convert {path} -o model.emoe`") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot open: {e.strerror}") from None
    with f:
        file_size = os.fstat(f.fileno()).st_size
        h = _read_header(f, path, file_size)
        f.seek(h.manifest_offset)
        blob = f.read(h.manifest_size)
    if len(blob) != h.manifest_size or zlib.crc32(blob) != h.manifest_crc:
        raise FormatError(f"{path}: manifest checksum mismatch (corrupt file)")
    try:
        manifest = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: manifest is not valid JSON: {e}") from None
    _validate_manifest(path, manifest, h)
    return Container(path, h, manifest, file_size)


def update_manifest(path: str, changes: Dict[str, Any]) -> None:
    """Merge `changes` into a container's manifest in place (e.g. a routing profile).

    The new manifest is appended after the old one and made durable before the
    header is rewritten to point at it, so a crash at any moment leaves either
    the old container or the new one, never a mix. The old manifest's bytes
    stay behind as dead space (manifests are small).
    """
    c = open_container(path)
    manifest = dict(c.manifest)
    manifest.update(changes)
    blob = json.dumps(manifest, separators=(",", ":")).encode("utf-8")
    h = c.header
    offset = _align(h.manifest_offset + h.manifest_size, PAGE)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(blob + b"\0" * (_align(len(blob), PAGE) - len(blob)))
        f.flush()
        os.fsync(f.fileno())
        header = _HEADER.pack(
            MAGIC, FORMAT_VERSION, 0, offset, len(blob), zlib.crc32(blob), h.resident_crc,
            h.resident_offset, h.resident_size, h.experts_offset, h.experts_size,
        )
        f.seek(0)
        f.write(header + _HEADER_CRC.pack(zlib.crc32(header)))
        f.flush()
        os.fsync(f.fileno())
