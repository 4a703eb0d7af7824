"""Flax msgpack checkpoints (flax_model.msgpack), read as a stream and written back.

flax.serialization.msgpack_restore unpacks the whole file into memory and then copies
every array out of it: about twice the file size at peak, ~21 GB for DALL·E Mega's
10.4 GB file. Here the file is walked item by item: each array's bytes are read
straight into their own numpy buffer, so the peak is the arrays the caller keeps plus
one array. Arrays a caller does not want are skipped with a seek, never read.

The format (flax.serialization): nested msgpack maps with string keys; an array is
msgpack ExtType 1 whose payload is msgpack (shape, dtype name, raw C-order bytes); a
numpy scalar is ExtType 3 with the same payload; arrays over 1 GiB are split into a
map {"__msgpack_chunked_array__": True, "shape": {"0": ..}, "chunks": {"0": arr, ..}}.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO, Callable

import msgpack
import numpy as np

Path_ = tuple[str, ...]

_EXT_NDARRAY = 1
_EXT_NPSCALAR = 3
_CHUNKED = "__msgpack_chunked_array__"
_MAX_CHUNK_BYTES = 2**30  # flax.serialization.MAX_CHUNK_SIZE


def _dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


class _Stream:
    """Just enough of a msgpack decoder to walk maps and stream out arrays."""

    def __init__(self, file: BinaryIO):
        self.file = file

    def read(self, n: int) -> bytes:
        data = self.file.read(n)
        if len(data) != n:
            raise ValueError("truncated msgpack file")
        return data

    def uint(self, n: int) -> int:
        return int.from_bytes(self.read(n), "big")

    def header(self) -> tuple[str, int]:
        """The next item's kind and its length (element count, byte count or value)."""
        b = self.read(1)[0]
        if b <= 0x7F:
            return "int", b
        if 0x80 <= b <= 0x8F:
            return "map", b & 0x0F
        if 0x90 <= b <= 0x9F:
            return "array", b & 0x0F
        if 0xA0 <= b <= 0xBF:
            return "str", b & 0x1F
        if b >= 0xE0:
            return "int", b - 0x100
        sizes = {0xD9: ("str", 1), 0xDA: ("str", 2), 0xDB: ("str", 4),
                 0xC4: ("bin", 1), 0xC5: ("bin", 2), 0xC6: ("bin", 4),
                 0xDC: ("array", 2), 0xDD: ("array", 4), 0xDE: ("map", 2), 0xDF: ("map", 4),
                 0xC7: ("ext", 1), 0xC8: ("ext", 2), 0xC9: ("ext", 4)}
        if b in sizes:
            kind, width = sizes[b]
            return kind, self.uint(width)
        fixext = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
        if b in fixext:
            return "ext", fixext[b]
        scalars = {0xC0: None, 0xC2: False, 0xC3: True}
        if b in scalars:
            return "scalar", scalars[b]
        fmt = {0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
               0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}
        if b in fmt:
            return "scalar", struct.unpack(fmt[b], self.read(struct.calcsize(fmt[b])))[0]
        raise ValueError(f"unsupported msgpack type byte 0x{b:02x}")

    def small_value(self, kind: str, length: int):
        """A whole value that is not a map or an array extension (keys, shapes, flags)."""
        if kind in ("int", "scalar"):
            return length
        if kind == "str":
            return self.read(length).decode("utf-8")
        if kind == "bin":
            return self.read(length)
        if kind == "array":
            return [self.small_value(*self.header()) for _ in range(length)]
        if kind == "map":
            return {self.small_value(*self.header()): self.small_value(*self.header()) for _ in range(length)}
        raise ValueError(f"unexpected msgpack {kind} where a small value was expected")

    def ext_array(self, length: int, keep: bool) -> np.ndarray | None:
        code = self.read(1)[0]
        start = self.file.tell()
        if code not in (_EXT_NDARRAY, _EXT_NPSCALAR):
            raise ValueError(f"unsupported msgpack extension type {code}")
        if not keep:
            self.file.seek(start + length)
            return None
        kind, count = self.header()
        if kind != "array" or count != 3:
            raise ValueError("malformed array extension")
        shape = tuple(self.small_value(*self.header()))
        dtype_name = self.small_value(*self.header())
        dtype_name = dtype_name.decode() if isinstance(dtype_name, bytes) else dtype_name
        kind, nbytes = self.header()
        if kind not in ("bin", "str"):
            raise ValueError("malformed array extension payload")
        array = np.empty(shape, dtype=_dtype(dtype_name))
        if array.nbytes != nbytes:
            raise ValueError(f"array of shape {shape} {dtype_name} has {nbytes} bytes")
        if nbytes and self.file.readinto(memoryview(array.reshape(-1).view(np.uint8))) != nbytes:
            raise ValueError("truncated msgpack file")
        return array[()] if code == _EXT_NPSCALAR else array

    def skip(self, kind: str, length: int) -> None:
        if kind in ("str", "bin"):
            self.file.seek(length, 1)
        elif kind == "ext":
            self.file.seek(1 + length, 1)
        elif kind == "array":
            for _ in range(length):
                self.skip(*self.header())
        elif kind == "map":
            for _ in range(2 * length):
                self.skip(*self.header())


def load_tree(
    path: str | Path,
    want: Callable[[Path_], bool] = lambda path: True,
    convert: Callable[[Path_, np.ndarray], Any] = lambda path, array: array,
) -> dict:
    """The checkpoint as nested dicts (only the wanted leaves), each array passed
    through `convert(path, array)` as soon as it is read, so the caller can place it
    on a device, cast it or split it before the next one is read. flax's chunked
    big arrays are joined back first."""
    with open(path, "rb") as file:
        stream = _Stream(file)
        kind, length = stream.header()
        if kind != "map":
            raise ValueError(f"{path}: not a flax msgpack checkpoint (top level is a {kind})")
        return _read_map(stream, length, (), want, convert)


def _read_map(stream: _Stream, length: int, prefix: Path_, want, convert) -> dict:
    tree: dict = {}
    for _ in range(length):
        key = str(stream.small_value(*stream.header()))
        path = prefix + (key,)
        kind, size = stream.header()
        if kind == "ext":
            array = stream.ext_array(size, keep=want(path))
            if array is not None:
                tree[key] = convert(path, array)
        elif kind == "map":
            sub = _read_map(stream, size, path, want, lambda p, a: a)
            if sub.get(_CHUNKED):
                shape = tuple(sub["shape"][str(i)] for i in range(len(sub["shape"])))
                chunks = [sub["chunks"][str(i)] for i in range(len(sub.get("chunks", {})))]
                if chunks:  # none when the array was not wanted
                    tree[key] = convert(path, np.concatenate(chunks).reshape(shape))
            elif sub:
                tree[key] = _convert_leaves(sub, path, convert)
        else:
            tree[key] = stream.small_value(kind, size)
    return tree


def _convert_leaves(tree: dict, prefix: Path_, convert) -> dict:
    return {
        k: _convert_leaves(v, prefix + (k,), convert) if isinstance(v, dict) else
        convert(prefix + (k,), v) if isinstance(v, np.ndarray) else v
        for k, v in tree.items()
    }


def _pack_array(array: np.ndarray) -> msgpack.ExtType:
    array = np.ascontiguousarray(array)
    dtype_name = "bfloat16" if array.dtype.name == "bfloat16" else array.dtype.name
    payload = msgpack.packb((array.shape, dtype_name, array.tobytes("C")), use_bin_type=True)
    return msgpack.ExtType(_EXT_NDARRAY, payload)


def _chunked(array: np.ndarray) -> dict:
    step = max(1, _MAX_CHUNK_BYTES // array.dtype.itemsize)
    flat = array.reshape(-1)
    chunks = [flat[i : i + step] for i in range(0, flat.size, step)]
    return {
        _CHUNKED: True,
        "shape": {str(i): int(d) for i, d in enumerate(array.shape)},
        "chunks": {str(i): chunk for i, chunk in enumerate(chunks)},
    }


def save_tree(path: str | Path, tree: dict) -> None:
    """Writes nested dicts of arrays as flax.serialization.to_bytes would (same bytes
    for the same tree), so dalle-mini and this package read each other's files."""

    def prepare(node):
        if isinstance(node, dict):
            return {str(k): prepare(v) for k, v in node.items()}
        array = np.asarray(node)
        return _chunked(array) if array.nbytes > _MAX_CHUNK_BYTES else array

    def default(obj):
        if isinstance(obj, np.ndarray):
            return _pack_array(obj)
        if isinstance(obj, np.generic):
            payload = _pack_array(np.asarray(obj)).data
            return msgpack.ExtType(_EXT_NPSCALAR, payload)
        raise TypeError(f"cannot serialize {type(obj)}")

    with open(path, "wb") as file:
        msgpack.pack(prepare(tree), file, default=default, use_bin_type=True, strict_types=False)
