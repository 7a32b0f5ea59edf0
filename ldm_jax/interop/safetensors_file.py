"""Reads `.safetensors` files after checking their header, with one-line errors naming the file.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`), then the
tensor bytes; offsets count from the end of the header. `read_header` checks all of it against
the file's real size before any tensor is read, so a truncated or corrupt header, an unknown
dtype, a negative or non-integer shape, offsets past the end of the file or spans that do not
match their shape end in one `CheckpointFormatError`, never in the `safetensors` library's own
exception or a huge allocation. `read_safetensors` then reads the tensors (numpy, no PyTorch).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from typing import Any

import ml_dtypes
import numpy as np
from safetensors.numpy import load_file

from ldm_jax.interop.torch_pickle import CheckpointFormatError

MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own limit
DTYPES: dict[str, Any] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
}


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header: numpy dtype, shape and byte span in the data."""

    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


def read_header(path: str | os.PathLike) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """(tensors by name, `__metadata__`) of a safetensors file, checked against its size.

    Raises:
      CheckpointFormatError: the file is not a well-formed safetensors file (one line naming
        the file and what is wrong).
      OSError: the file cannot be opened.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _error(path, f"{size} bytes is shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise _error(
                path, f"the header claims {n} bytes but the file holds {size - 8} after its length"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _error(path, f"the header is not JSON ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(header, dict):
        raise _error(path, f"the header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _error(path, "__metadata__ is not an object")
    data_size = size - 8 - n
    entries = {name: _entry(path, name, info, data_size) for name, info in header.items()}
    return entries, {str(k): v for k, v in metadata.items()}


def _entry(path: str, name: str, info: Any, data_size: int) -> TensorEntry:
    if not isinstance(info, dict):
        raise _error(path, f"tensor {name!r} is described by a {type(info).__name__}")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPES:
        raise _error(path, f"tensor {name!r} has an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _error(path, f"tensor {name!r} has a bad shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise _error(path, f"tensor {name!r} has bad data_offsets {offsets!r}")
    begin, end = offsets
    if end > data_size:
        raise _error(
            path,
            f"tensor {name!r} ends at byte {end} of the data, past its end ({data_size} bytes): "
            "the file is truncated",
        )
    np_dtype = np.dtype(DTYPES[dtype])
    need = math.prod(shape) * np_dtype.itemsize
    if end - begin != need:
        raise _error(
            path,
            f"tensor {name!r} of shape {tuple(shape)} {dtype} needs {need} bytes, its "
            f"data_offsets span {end - begin}",
        )
    return TensorEntry(np_dtype, tuple(shape), begin, end)


def _error(path: str, what: str) -> CheckpointFormatError:
    return CheckpointFormatError(f"{path}: not a valid safetensors file: {what}.")


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as numpy arrays, after `read_header`'s checks.

    Raises:
      CheckpointFormatError: a malformed file (see `read_header`).
      OSError: the file cannot be opened.
    """
    read_header(path)
    try:
        return load_file(os.fspath(path))
    except Exception as e:  # noqa: BLE001 - the library's SafetensorError and the like
        raise _error(os.fspath(path), " ".join(str(e).split())[:200]) from None
