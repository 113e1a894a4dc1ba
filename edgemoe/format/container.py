"""The .emoe container, written. Python's writer is the only code that lays a container out; the
C++ runtime (csrc/format/container.cpp) is the only code that reads and checks its header, config
and tables. open_container() asks it, and parses only the JSON manifest, which holds what Python
alone uses (tokenizer, chat template, provenance, routing profile, bit-allocation record).

Layout (docs/FORMAT.md has the byte-by-byte description):

    [header page, 4096 bytes] [resident section] [expert section] [index] [manifest JSON] [pad to 4096]

The index is binary: the model config as typed values, the resident tensor table and the expert
table. The header is written last, so a file whose header is missing or whose CRC does not match
is never mistaken for a complete container. Writers work on a temporary file next to the
destination and rename it into place at the end.
"""
from __future__ import annotations

import functools
import json
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Dict, List, Optional, Tuple

import numpy as np

from . import quant
from ..errors import FormatError
from .model_config import moe_layers, validate_config

MAGIC = b"EDGEMOE\0"
FORMAT_VERSION = 2
PAGE = 4096           # sections and expert blobs start on this boundary (direct I/O)
TENSOR_ALIGN = 64     # resident tensors and expert parts start on this boundary (SIMD loads)
EXPERT_PARTS = ("gate", "up", "down")
ZSTD_LEVEL = 3  # higher levels gain well under 1 % more on quantized codes (bench/zstd_ratio.py)

# magic, version, flags, index (offset, size, crc), manifest (offset, size, crc), resident crc,
# resident (offset, size), experts (offset, size); then the CRC of these 92 bytes
_HEADER = struct.Struct("<8sII QQI QQI I QQ QQ")
_HEADER_CRC = struct.Struct("<I")
HEADER_BYTES = _HEADER.size + _HEADER_CRC.size
_COMPRESSION = {"none": 0, "zstd": 1}


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _pack_header(sections: Dict[str, Dict[str, int]]) -> bytes:
    """The header page's bytes for {index, manifest, resident, experts: {offset, size, crc32}}."""
    i, m, r, e = (sections[k] for k in ("index", "manifest", "resident", "experts"))
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, i["offset"], i["size"], i["crc32"],
                          m["offset"], m["size"], m["crc32"], r["crc32"], r["offset"], r["size"],
                          e["offset"], e["size"])
    return header + _HEADER_CRC.pack(zlib.crc32(header))


# ---------------------------------------------------------------- the index

_VALUE_KINDS = {"int": 0, "float": 1, "bool": 2, "text": 3, "ints": 4}


def _name(text: str, width: str = "<H") -> bytes:
    b = text.encode("utf-8")
    return struct.pack(width, len(b)) + b


def _value(key: str, v: Any) -> bytes:
    if isinstance(v, bool):
        return struct.pack("<B?", _VALUE_KINDS["bool"], v)
    if isinstance(v, int):
        return struct.pack("<Bq", _VALUE_KINDS["int"], v)
    if isinstance(v, float):
        return struct.pack("<Bd", _VALUE_KINDS["float"], v)
    if isinstance(v, str):
        return struct.pack("<B", _VALUE_KINDS["text"]) + _name(v, "<I")
    if isinstance(v, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return struct.pack(f"<BI{len(v)}q", _VALUE_KINDS["ints"], len(v), *v)
    raise FormatError(f"config field {key} has a value the container cannot store: {v!r}")


def _expert_table(experts: List[List[Dict[str, Any]]]) -> List[bytes]:
    # layers, then experts per MoE layer; a dense layer's row is empty (the config names them)
    out = [struct.pack("<II", len(experts), max((len(row) for row in experts), default=0))]
    for row in experts:
        for b in row:
            out.append(struct.pack("<QQQIBB", b["offset"], b["size"], b["stored"], b["crc32"], quant.CODES[b["type"]],
                                   _COMPRESSION[b["compression"]]))
            out.append(struct.pack("<3Q", *(b["parts"][p]["offset"] for p in EXPERT_PARTS)))
    return out


LOW_BIT_TABLE = 1  # the byte that announces the low-bit copies' table after the expert table


def encode_index(config: Dict[str, Any], tensors: Dict[str, Dict[str, Any]], experts: List[List[Dict[str, Any]]],
                 low_bit_experts: Optional[List[List[Dict[str, Any]]]] = None) -> bytes:
    """The index section: the config's fields, then the tables, in the form open_container()
    returns them (tensors {name: {type, shape, offset, nbytes}}; experts [layer][expert] of
    {type, offset, size, stored, crc32, compression, parts: {gate, up, down: {offset}}}), then
    the low-bit copies' table in the same form when the container has one."""
    out = [struct.pack("<I", len(config))]
    out += [_name(k) + _value(k, v) for k, v in config.items()]
    out.append(struct.pack("<I", len(tensors)))
    for name, t in tensors.items():
        shape = t["shape"]
        out.append(_name(name) + struct.pack("<BBQQQQ", quant.CODES[t["type"]], len(shape),
                                             shape[0] if len(shape) == 2 else 1, shape[-1], t["offset"], t["nbytes"]))
    out += _expert_table(experts)
    if low_bit_experts:
        out.append(struct.pack("<B", LOW_BIT_TABLE))
        out += _expert_table(low_bit_experts)
    return b"".join(out)


# ---------------------------------------------------------------- writing


def _blob_layout(parts: Dict[str, Tuple[int, Tuple[int, ...]]]) -> Tuple[Dict[str, Dict[str, Any]], int]:
    """An expert blob's layout from {part: (nbytes, shape)}: gate, up, down one after another,
    each on a TENSOR_ALIGN boundary. Returns ({part: {offset, nbytes, shape}}, blob size)."""
    table, size = {}, 0
    for part in EXPERT_PARTS:
        nbytes, shape = parts[part]
        size = _align(size, TENSOR_ALIGN)
        table[part] = {"offset": size, "nbytes": int(nbytes), "shape": [int(s) for s in shape]}
        size += int(nbytes)
    return table, size


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
        self.low_bit_experts: Dict[Tuple[int, int], Dict[str, Any]] = {}  # second, low-bit copies
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

    def add_resident(self, name: str, qtype: int, data, shape: Tuple[int, ...]) -> None:
        """Append one resident tensor, already encoded: flat uint8 bytes of `qtype`, or an iterable
        of such blocks written one after another (quant.quantize_blocks), so a large tensor is
        never whole in memory."""
        offset = self._start_resident(name)
        nbytes = 0
        for block in ([data] if isinstance(data, np.ndarray) else data):
            buf = memoryview(np.ascontiguousarray(block).view(np.uint8)).cast("B")
            self._f.write(buf)
            self._resident_crc = zlib.crc32(buf, self._resident_crc)
            nbytes += len(buf)
        self.resident[name] = {"type": quant.NAMES[qtype], "shape": [int(s) for s in shape], "offset": offset,
                               "nbytes": nbytes}

    def _start_resident(self, name: str) -> int:
        """Where resident tensor `name` begins (aligned), within the resident section."""
        if not self._resident_open:
            raise RuntimeError("resident tensors must all be written before the first expert")
        if name in self.resident:
            raise RuntimeError(f"resident tensor {name} written twice")
        from .. import _core

        later = _core.KEPT_FOR_LATER_PREFIX  # not loaded by an engine: they must come last
        if name.startswith(later):
            self._kept_for_later = True
        elif getattr(self, "_kept_for_later", False):
            raise RuntimeError(f"resident tensor {name} written after the tensors kept for later ({later}*)")
        self._pad_to(TENSOR_ALIGN, crc_resident=True)
        return self._tell() - self._resident_offset

    def _expert_table(self, layer: int, expert: int, low_bit_copy: bool) -> Dict[Tuple[int, int], Dict[str, Any]]:
        """The table an expert's blob goes into; each (layer, expert) once per table."""
        self._close_resident()
        table = self.low_bit_experts if low_bit_copy else self.experts
        if (layer, expert) in table:
            raise RuntimeError(f"expert {layer}/{expert}{' (low-bit copy)' if low_bit_copy else ''} written twice")
        return table

    # --- a skeleton: the layout of a container without its weights (edgemoe doctor) ---
    # Reserved bytes are skipped, not written (a sparse file): the runtime reads the layout and plans
    # an engine's memory from it, but loading an engine fails the resident section's checksum.

    def reserve_resident(self, name: str, qtype: int, shape: Tuple[int, ...]) -> None:
        """A resident tensor's place, of the size `qtype` gives `shape`, left unwritten."""
        rows, cols = (1, shape[0]) if len(shape) == 1 else shape
        offset = self._start_resident(name)
        nbytes = int(rows) * quant.row_bytes(qtype, int(cols))
        self.resident[name] = {"type": quant.NAMES[qtype], "shape": [int(s) for s in shape], "offset": offset,
                               "nbytes": nbytes}
        self._f.seek(nbytes, os.SEEK_CUR)

    def reserve_expert(self, layer: int, expert: int, qtype: int, shapes: Dict[str, Tuple[int, int]],
                       low_bit_copy: bool = False) -> None:
        """A routed expert's blob place, left unwritten (add_expert's layout)."""
        table = self._expert_table(layer, expert, low_bit_copy)
        parts, size = _blob_layout({p: (rows * quant.row_bytes(qtype, cols), (rows, cols))
                                    for p, (rows, cols) in shapes.items()})
        self._pad_to(PAGE)
        table[(layer, expert)] = {"type": quant.NAMES[qtype], "parts": parts, "size": size, "stored": 0,
                                  "compression": "none", "offset": self._tell(), "crc32": 0}
        self._f.seek(size, os.SEEK_CUR)

    def _close_resident(self) -> None:
        if self._resident_open:
            self._pad_to(PAGE, crc_resident=True)
            self._resident_size = self._tell() - self._resident_offset
            self._resident_open = False
            self._experts_offset = self._tell()

    def add_expert(self, layer: int, expert: int, qtype: int, parts: Dict[str, Tuple[np.ndarray, Tuple[int, int]]],
                   compress: Optional[str] = None, low_bit_copy: bool = False) -> None:
        """Append one routed expert as a single page-aligned blob of its gate, up and down projections.
        compress="zstd" stores the blob zstd-compressed when that makes it smaller. low_bit_copy: the
        blob is the expert's second, low-bit copy (docs/FORMAT.md), which a container has for every
        routed expert or for none."""
        table = self._expert_table(layer, expert, low_bit_copy)
        bufs = {p: memoryview(np.ascontiguousarray(parts[p][0]).view(np.uint8)).cast("B") for p in EXPERT_PARTS}
        part_table, size = _blob_layout({p: (len(bufs[p]), parts[p][1]) for p in EXPERT_PARTS})
        raw = bytearray(size)
        for p, buf in bufs.items():
            raw[part_table[p]["offset"]:part_table[p]["offset"] + len(buf)] = buf
        stored = bytes(raw)
        entry: Dict[str, Any] = {"type": quant.NAMES[qtype], "parts": part_table, "size": size,
                                 "stored": 0, "compression": "none"}
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
        table[(layer, expert)] = entry

    def finish(self, config: Dict[str, Any], manifest: Dict[str, Any]) -> None:
        """Write the index (config and tables) and the manifest, then the header; flush to disk
        and rename into place."""
        config = validate_config(config, self.path)
        self._close_resident()
        self._pad_to(PAGE)
        experts_size = self._tell() - self._experts_offset
        n_experts, routed = config["n_experts"], set(moe_layers(config))
        missing = [(l, e) for l in sorted(routed) for e in range(n_experts) if (l, e) not in self.experts]
        if missing:
            raise RuntimeError(f"{len(missing)} experts were never written, first {missing[0]}")
        stray = [key for key in self.experts if key[0] not in routed or not 0 <= key[1] < n_experts]
        if stray:
            raise RuntimeError(f"expert {stray[0][0]}/{stray[0][1]} was written, but the config has no such expert")
        if self.low_bit_experts and set(self.low_bit_experts) != set(self.experts):
            raise RuntimeError("low-bit copies were written for some experts only")

        def rows(blobs: Dict[Tuple[int, int], Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
            return [[blobs[(l, e)] for e in range(n_experts)] if l in routed else [] for l in range(config["n_layers"])]

        index = encode_index(config, self.resident, rows(self.experts),
                             rows(self.low_bit_experts) if self.low_bit_experts else None)
        manifest = dict(manifest, format_version=FORMAT_VERSION)
        blob = json.dumps(manifest, separators=(",", ":")).encode("utf-8")
        index_offset = self._tell()
        self._f.write(index)
        manifest_offset = self._tell()
        self._f.write(blob)
        self._pad_to(PAGE)
        header = _pack_header({
            "index": {"offset": index_offset, "size": len(index), "crc32": zlib.crc32(index)},
            "manifest": {"offset": manifest_offset, "size": len(blob), "crc32": zlib.crc32(blob)},
            "resident": {"offset": self._resident_offset, "size": self._resident_size, "crc32": self._resident_crc},
            "experts": {"offset": self._experts_offset, "size": experts_size, "crc32": 0}})
        self._f.seek(0)
        self._f.write(header)
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


@dataclass(frozen=True)
class Container:
    """An opened container: what the runtime read and checked, and the parsed manifest. The
    tables are built as Python objects only when asked for (info, tools, tests): a model with
    tens of thousands of experts loads without them."""

    native: Any                   # edgemoe._core.Container: what Engine and plan_memory take
    manifest: Dict[str, Any]      # tokenizer, quantization, source, profile, bit_allocation

    @property
    def path(self) -> str:
        return self.native.path

    @property
    def file_size(self) -> int:
        return self.native.file_size

    @functools.cached_property
    def config(self) -> Dict[str, Any]:
        """Every field of the model config (csrc/model/config.cpp)."""
        return self.native.config

    @functools.cached_property
    def sections(self) -> Dict[str, Dict[str, int]]:
        """{index, manifest, resident, experts: {offset, size, crc32}}."""
        return self.native.sections

    @functools.cached_property
    def tensors(self) -> Dict[str, Dict[str, Any]]:
        """{name: {type, shape, offset, nbytes}}, offsets within the resident section."""
        return self.native.tensors

    @property
    def resident_loaded(self) -> int:
        """The resident bytes an engine loads: all but the tensors kept for later (mtp.*, last)."""
        return self.native.resident_loaded

    @functools.cached_property
    def experts(self) -> List[List[Dict[str, Any]]]:
        """[layer][expert]: {type, offset, size, stored, crc32, compression, parts}."""
        return self.native.experts

    @functools.cached_property
    def low_bit_experts(self) -> Optional[List[List[Dict[str, Any]]]]:
        """The experts' second, low-bit copies in the form of `experts`; None if it has none."""
        return self.native.low_bit_experts


def open_container(path: str) -> Container:
    """Open a container; FormatError on anything malformed (the runtime's reader says what)."""
    from .. import _core

    path = os.fspath(path)
    native = _core.open_container(path)
    try:
        manifest = json.loads(native.manifest_bytes.decode("utf-8"))
        native.release_manifest_bytes()
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: manifest is not valid JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise FormatError(f"{path}: invalid manifest: not a JSON object")
    return Container(native, manifest)


def replace_section(path: str, which: str, blob: bytes) -> None:
    """Point a container's `which` section ("manifest" or "index") at new bytes.

    The bytes are appended at the end of the file and made durable before the header is
    rewritten to point at them, so a crash at any moment leaves either the old container or the
    new one, never a mix. The old bytes stay behind as dead space (both sections are small).
    """
    sections = {k: dict(v) for k, v in open_container(path).sections.items()}
    with open(path, "r+b") as f:
        offset = _align(os.fstat(f.fileno()).st_size, PAGE)
        f.seek(offset)
        f.write(blob + b"\0" * (_align(len(blob), PAGE) - len(blob)))
        f.flush()
        os.fsync(f.fileno())
        sections[which] = {"offset": offset, "size": len(blob), "crc32": zlib.crc32(blob)}
        f.seek(0)
        f.write(_pack_header(sections))
        f.flush()
        os.fsync(f.fileno())


def update_manifest(path: str, changes: Dict[str, Any]) -> None:
    """Merge `changes` into a container's manifest in place (e.g. a routing profile)."""
    manifest = dict(open_container(path).manifest, **changes)
    replace_section(path, "manifest", json.dumps(manifest, separators=(",", ":")).encode("utf-8"))
