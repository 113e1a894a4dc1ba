"""Read tensors from (possibly sharded) safetensors checkpoints, lazily, as float32 numpy arrays.

We read the format ourselves rather than through the `safetensors` package
because hub checkpoints are bfloat16, which numpy cannot represent: the
package's numpy path refuses them, and its torch path would make torch a
runtime dependency. The format is a little-endian u64 header length, a JSON
header, then raw tensor bytes; we memory-map the file so that converting a
model never holds more than the tensor being converted. Tensors are read with
explicit reads rather than a memory map, because mapped pages of a
multi-GB checkpoint would count against the converter's resident memory.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import FormatError

_DTYPES = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # widened to f32 by shifting into the high half
    "F64": np.dtype("<f8"),
    "U8": np.dtype("u1"),  # packed codes and exponents (gpt-oss's MXFP4 experts): read with get_raw
}
_MAX_HEADER = 100 << 20


def _as_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Stored values as float32 (BF16, kept as its uint16 bits, shifted into the high half)."""
    return (raw.astype(np.uint32) << 16).view(np.float32) if dtype == "BF16" else raw.astype(np.float32, copy=False)


class SafetensorsFile:
    """One .safetensors file: its tensor table and a read-only memory map."""

    def __init__(self, path: str):
        self.path = path
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                raw = f.read(8)
                if len(raw) < 8:
                    raise FormatError(f"{path}: truncated safetensors file (no header)")
                (n,) = struct.unpack("<Q", raw)
                if n > _MAX_HEADER or 8 + n > size:
                    raise FormatError(f"{path}: safetensors header length {n} is invalid for a {size}-byte file")
                header = json.loads(f.read(n).decode("utf-8"))
        except OSError as e:
            raise FormatError(f"{path}: cannot read: {e.strerror or e}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FormatError(f"{path}: safetensors header is not valid JSON: {e}") from None
        if not isinstance(header, dict):
            raise FormatError(f"{path}: safetensors header is not an object")
        self._data_start = 8 + n
        data_len = size - self._data_start
        self.tensors: Dict[str, Tuple[str, Tuple[int, ...], int, int]] = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise FormatError(f"{path}: malformed entry for tensor {name}") from None
            if dtype not in _DTYPES:
                raise FormatError(f"{path}: tensor {name} has dtype {dtype}, which the converter does not support "
                                  f"(supported: {', '.join(_DTYPES)})")
            if not all(isinstance(s, int) and s >= 0 for s in shape) or not (isinstance(begin, int) and isinstance(end, int)):
                raise FormatError(f"{path}: tensor {name} has a malformed shape or offsets")
            nbytes = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize
            if not 0 <= begin <= end <= data_len or end - begin != nbytes:
                raise FormatError(f"{path}: tensor {name} offsets [{begin}, {end}) do not match its shape {shape} "
                                  f"or lie outside the file (truncated?)")
            self.tensors[name] = (dtype, shape, begin, end)

    def get(self, name: str, index: Optional[int] = None) -> np.ndarray:
        """The tensor (or, with `index`, its slice along the first axis) as float32.

        Only the requested bytes are read, so one expert of a stacked [E, ...]
        tensor costs that expert's bytes, not the whole stack's.
        """
        return _as_float32(self.get_raw(name, index), self.tensors[name][0])

    def dtype(self, name: str) -> str:
        return self.tensors[name][0]

    def rows(self, name: str, r0: int, r1: int) -> np.ndarray:
        """Rows r0 .. r1 - 1 of a 2-D tensor as float32, reading only their bytes."""
        dtype, shape, begin, end = self.tensors[name]
        if len(shape) != 2 or not 0 <= r0 <= r1 <= shape[0]:
            raise FormatError(f"{self.path}: rows {r0}..{r1} of tensor {name} of shape {shape}")
        row = shape[1] * _DTYPES[dtype].itemsize
        raw = self._read(name, begin + r0 * row, begin + r1 * row).reshape(r1 - r0, shape[1])
        return _as_float32(raw, dtype)

    def _read(self, name: str, begin: int, end: int) -> np.ndarray:
        """Bytes [begin, end) of the data section, as tensor `name`'s dtype (flat)."""
        np_dtype = _DTYPES[self.tensors[name][0]]
        raw = np.empty((end - begin) // np_dtype.itemsize, dtype=np_dtype)
        with open(self.path, "rb") as f:
            f.seek(self._data_start + begin)
            if f.readinto(memoryview(raw).cast("B")) != end - begin:
                raise FormatError(f"{self.path}: file ends inside tensor {name} (truncated)")
        return raw

    def get_raw(self, name: str, index: Optional[int] = None) -> np.ndarray:
        """Like get(), in the stored dtype (BF16 as its uint16 bits)."""
        _, shape, begin, end = self.tensors[name]
        if index is not None:
            if not shape or not 0 <= index < shape[0]:
                raise FormatError(f"{self.path}: index {index} out of range for tensor {name} of shape {shape}")
            stride = (end - begin) // shape[0]
            begin, end, shape = begin + index * stride, begin + (index + 1) * stride, shape[1:]
        return self._read(name, begin, end).reshape(shape)

    def shape(self, name: str) -> Tuple[int, ...]:
        return self.tensors[name][1]


class RowReader:
    """A 2-D tensor of a safetensors file that reads rows when sliced (w[r0:r1] -> float32):
    what edgemoe.format.quant.quantize takes in place of an array."""

    def __init__(self, shard: SafetensorsFile, name: str):
        self.shard, self.name = shard, name
        self.shape = shard.shape(name)
        self.ndim = 2

    def __getitem__(self, rows: slice) -> np.ndarray:
        r0, r1, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("RowReader reads contiguous rows only")
        return self.shard.rows(self.name, r0, max(r0, r1))


class Checkpoint:
    """All tensors of a Hugging Face model folder, single-file or sharded."""

    def __init__(self, folder: str):
        index = os.path.join(folder, "model.safetensors.index.json")
        single = os.path.join(folder, "model.safetensors")
        if os.path.exists(index):
            try:
                with open(index, encoding="utf-8") as f:
                    weight_map = json.load(f)["weight_map"]
                files = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise FormatError(f"{index}: not a valid safetensors index: {e}") from None
            for name in files:
                if os.path.basename(name) != name:
                    raise FormatError(f"{index}: shard name {name!r} must be a plain file name")
        elif os.path.exists(single):
            files = ["model.safetensors"]
        else:
            found = sorted(p for p in os.listdir(folder) if p.endswith(".safetensors"))
            if not found:
                raise FormatError(f"{folder}: no model.safetensors or model.safetensors.index.json "
                                  f"(only safetensors checkpoints can be converted)")
            files = found
        self._where: Dict[str, SafetensorsFile] = {}
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.exists(path):
                raise FormatError(f"{folder}: shard {name} listed in the index is missing")
            shard = SafetensorsFile(path)
            for tensor in shard.tensors:
                self._where[tensor] = shard

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def names(self) -> List[str]:
        return list(self._where)

    def get(self, name: str, index: Optional[int] = None) -> np.ndarray:
        if name not in self._where:
            raise FormatError(f"checkpoint has no tensor {name}")
        return self._where[name].get(name, index)

    def get_raw(self, name: str, index: Optional[int] = None) -> np.ndarray:
        if name not in self._where:
            raise FormatError(f"checkpoint has no tensor {name}")
        return self._where[name].get_raw(name, index)

    def lazy(self, name: str):
        """A 2-D tensor as rows read on demand (RowReader), else the whole tensor as get() gives it:
        the quantizer then holds one block of rows of a 2.5 GB embedding at a time, not all of it."""
        if name not in self._where:
            raise FormatError(f"checkpoint has no tensor {name}")
        shard = self._where[name]
        return RowReader(shard, name) if len(shard.shape(name)) == 2 else shard.get(name)

    def dtype(self, name: str) -> str:
        if name not in self._where:
            raise FormatError(f"checkpoint has no tensor {name}")
        return self._where[name].dtype(name)

    def shape(self, name: str) -> Tuple[int, ...]:
        if name not in self._where:
            raise FormatError(f"checkpoint has no tensor {name}")
        return self._where[name].shape(name)
