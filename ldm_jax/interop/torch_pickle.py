"""Reads PyTorch `torch.save` files into numpy without PyTorch and without running code.

A `.ckpt`/`.pt`/`.bin` file written by `torch.save` (PyTorch >= 1.6) is a zip archive holding
`<prefix>/data.pkl` (a pickle of the saved object) and one raw little-endian buffer per storage
(`<prefix>/data/<key>`). Unpickling an untrusted file with the standard `pickle` can run arbitrary
code, so this module uses a restricted unpickler: the only globals it resolves are the handful that
rebuild tensors (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`, the `torch.*Storage`
types, `collections.OrderedDict`), each replaced by our own numpy implementation. Any other global
is refused with an error naming it; with `allow_placeholders=True` it becomes an inert placeholder
object instead (nothing from the file is imported or called), which lets one read the
`state_dict` of Lightning checkpoints that also pickle callbacks or hyper-parameters. Files of
PyTorch < 1.6 are not zip archives but a sequence of pickles: a magic number, the protocol
version (1001), system info, the saved object (tensors refer to storages by key), the list of
storage keys, then each storage as an int64 element count and its raw little-endian data. Each
pickle is read with the same restricted unpickler, and pickle ends are found by parsing opcodes
with `pickletools` (which runs nothing). pytorch-fid's FID Inception weights (2019) are such a
file.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

# `torch.<Name>Storage` (as pickled by torch.save) -> numpy dtype.
_STORAGE_DTYPES: dict[str, Any] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}
# `torch.<dtype>` globals (used by `_rebuild_tensor_v3`) -> numpy dtype.
_TORCH_DTYPES: dict[str, Any] = {
    "float32": np.float32,
    "float": np.float32,
    "float64": np.float64,
    "double": np.float64,
    "float16": np.float16,
    "half": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "int64": np.int64,
    "long": np.int64,
    "int32": np.int32,
    "int": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The pickle asks for a global that the restricted unpickler does not allow."""


class _StorageType:
    """Stand-in for a `torch.<Name>Storage` class: only remembers its dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _TorchDtype:
    """Stand-in for a `torch.<dtype>` object."""

    def __init__(self, name: str):
        self.dtype = np.dtype(_TORCH_DTYPES[name])


class InertPlaceholder:
    """What an unknown global becomes with `allow_placeholders=True`: stores its arguments only."""

    qualified_name = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert placeholder for {self.qualified_name}>"


def _placeholder_class(qualified_name: str) -> type:
    return type("InertPlaceholder", (InertPlaceholder,), {"qualified_name": qualified_name})


def _rebuild_tensor(
    storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> np.ndarray:
    """numpy version of `torch._utils._rebuild_tensor_v2` (a strided view into a storage)."""
    size, stride = tuple(size), tuple(stride)
    numel = int(np.prod(size)) if size else 1
    if numel == 0:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if offset < 0 or last >= storage.size or min(stride, default=0) < 0:
        raise pickle.UnpicklingError(
            f"tensor of size {size}, stride {stride}, offset {offset} exceeds its storage "
            f"of {storage.size} elements."
        )
    view = np.lib.stride_tricks.as_strided(
        storage[offset:],
        shape=size,
        strides=tuple(s * storage.itemsize for s in stride),
        writeable=False,
    )
    return np.array(view, copy=True, order="C")


def _rebuild_tensor_v3(
    storage: np.ndarray,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool,
    hooks: Any,
    dtype: _TorchDtype,
    *_: Any,
) -> np.ndarray:
    """numpy version of `torch._utils._rebuild_tensor_v3` (untyped storage plus a dtype)."""
    return _rebuild_tensor(storage.view(dtype.dtype), offset, size, stride)


def _rebuild_parameter(data: np.ndarray, *_: Any) -> np.ndarray:
    """`torch._utils._rebuild_parameter(_with_state)`: a Parameter is just its data here."""
    return data


_ALLOWED_CALLABLES: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only tensor-rebuilding globals; storages come from the zip archive."""

    def __init__(self, data: bytes, archive: _Archive, allow_placeholders: bool):
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._allow_placeholders = allow_placeholders

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_CALLABLES:
            return _ALLOWED_CALLABLES[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name in _TORCH_DTYPES:
            return _TorchDtype(name)
        if self._allow_placeholders:
            return _placeholder_class(f"{module}.{name}")
        raise UnsafeCheckpointError(
            f"Refusing to unpickle global {module}.{name}: only tensors, dicts and plain values "
            "are loaded from untrusted checkpoints. If the file is a training checkpoint that "
            "also pickles other objects, pass --allow_placeholders to python -m ldm_jax.convert "
            "(allow_placeholders=True in Python; they become inert placeholders, no code is "
            "run) or re-save just the state_dict."
        )

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"Unsupported persistent id {pid!r} in the checkpoint.")
        _, storage_type, key, _location, _numel = pid
        if not isinstance(storage_type, (_StorageType, _TorchDtype)):
            raise UnsafeCheckpointError(
                f"Storage {key!r} has an unsupported type {storage_type!r}."
            )
        return self._archive.storage(str(key), storage_type.dtype)


class _Archive:
    """The zip members of one `torch.save` file, storages read once and cached."""

    def __init__(self, zf: zipfile.ZipFile):
        self._zf = zf
        pkl = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ValueError(f"{zf.filename}: not a torch.save archive (no unique */data.pkl).")
        self.prefix = pkl[0][: -len("data.pkl")]
        self.pickle_bytes = zf.read(pkl[0])
        names = set(zf.namelist())
        order = self.prefix + "byteorder"
        self.big_endian = order in names and zf.read(order).decode().strip() == "big"
        self._cache: dict[str, np.ndarray] = {}

    def storage(self, key: str, dtype: np.dtype) -> np.ndarray:
        if key not in self._cache:
            raw = self._zf.read(f"{self.prefix}data/{key}")
            self._cache[key] = np.frombuffer(raw, np.uint8)
        raw = self._cache[key]
        if raw.size % dtype.itemsize:
            raise pickle.UnpicklingError(f"storage {key}: {raw.size} bytes is not a whole {dtype}.")
        arr = raw.view(dtype.newbyteorder(">") if self.big_endian else dtype)
        return arr.astype(dtype) if self.big_endian else arr


def load_torch_file(path: str, allow_placeholders: bool = False) -> Any:
    """Loads a `torch.save` file as nested dicts/lists of numpy arrays.

    Args:
      path: a `.ckpt`, `.pt`, `.pth` or `.bin` file written by `torch.save`: a zip archive, or
        the pre-1.6 format (`load_legacy_torch_file`).
      allow_placeholders: turn globals other than tensor rebuilders into inert placeholders
        instead of refusing the file.

    Returns:
      The saved object with every tensor as a numpy array (bfloat16 as `ml_dtypes.bfloat16`).

    Raises:
      UnsafeCheckpointError: the pickle references a global outside the allow-list.
      ValueError: the file is neither a zip-format nor a pre-1.6 torch.save file.
    """
    if not zipfile.is_zipfile(path):
        return load_legacy_torch_file(path, allow_placeholders)
    with zipfile.ZipFile(path) as zf:
        archive = _Archive(zf)
        return _RestrictedUnpickler(archive.pickle_bytes, archive, allow_placeholders).load()


def load_state_dict(path: str, allow_placeholders: bool = False) -> dict[str, np.ndarray]:
    """The flat `name -> array` state dict of a torch file (unwrapping Lightning's `state_dict`).

    Args:
      path: a torch.save file holding a state dict, or a dict with key `state_dict`.
      allow_placeholders: see `load_torch_file`.
    """
    obj = load_torch_file(path, allow_placeholders)
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}.")
    return {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class _LegacyUnpickler(_RestrictedUnpickler):
    """The restricted unpickler with pre-1.6 storage references
    ('storage', type, key, location, numel, view): the storages follow the pickle in the file,
    so a first pass (`storages=None`) records them and builds tensors on zero storages."""

    def __init__(
        self, data: bytes, storages: dict[str, np.ndarray] | None, allow_placeholders: bool
    ):
        super().__init__(data, None, allow_placeholders)
        self.storages = storages
        self.seen: dict[str, tuple[np.dtype, int]] = {}

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"Unsupported persistent id {pid!r}.")
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType) or view is not None:
            raise UnsafeCheckpointError(f"Unsupported storage reference {pid!r}.")
        self.seen[str(key)] = (storage_type.dtype, int(numel))
        if self.storages is None:
            return np.zeros(int(numel), storage_type.dtype)
        return self.storages[str(key)]


def _pickle_end(data: bytes, start: int) -> int:
    """Where the pickle that starts at `start` ends (opcodes are parsed, nothing is run)."""
    stream = io.BytesIO(data)
    stream.seek(start)
    for _ in pickletools.genops(stream):
        pass
    return stream.tell()


def _plain(data: bytes) -> Any:
    """A pickle of plain values (no globals resolve beyond the allow-list)."""
    return _RestrictedUnpickler(data, None, False).load()


def is_legacy_torch_file(data: bytes) -> bool:
    """True if `data` starts with the pre-1.6 magic number and protocol pickles."""
    try:
        end = _pickle_end(data, 0)
        magic = _plain(data[:end])
        protocol = _plain(data[end : _pickle_end(data, end)])
    except (ValueError, EOFError, pickle.UnpicklingError, IndexError):
        return False
    return magic == LEGACY_MAGIC and protocol == LEGACY_PROTOCOL


def load_legacy_torch_file(path: str, allow_placeholders: bool = False) -> Any:
    """Loads a pre-1.6 `torch.save` file as nested dicts/lists of numpy arrays.

    Args:
      path: the file.
      allow_placeholders: as `load_torch_file`.

    Returns:
      The saved object with every tensor as a numpy array.

    Raises:
      ValueError: not a pre-1.6 torch file, big-endian, or truncated storages.
      UnsafeCheckpointError: a global outside the allow-list.
    """
    with open(path, "rb") as f:
        data = f.read()
    if not is_legacy_torch_file(data):
        raise ValueError(f"{path}: neither a zip-format nor a pre-1.6 torch.save file.")
    pos = _pickle_end(data, _pickle_end(data, 0))
    info_end = _pickle_end(data, pos)
    info = _plain(data[pos:info_end])
    if isinstance(info, dict) and not info.get("little_endian", True):
        raise ValueError(f"{path}: big-endian legacy torch files are not supported.")
    obj_start, obj_end = info_end, _pickle_end(data, info_end)
    first = _LegacyUnpickler(data[obj_start:obj_end], None, allow_placeholders)
    first.load()
    keys_end = _pickle_end(data, obj_end)
    keys = _plain(data[obj_end:keys_end])
    storages, pos = {}, keys_end
    for key in keys:
        if str(key) not in first.seen:
            raise ValueError(f"{path}: storage {key} is listed but never used.")
        dtype, numel = first.seen[str(key)]
        if pos + 8 > len(data):
            raise ValueError(f"{path}: storage {key} is truncated.")
        (count,) = struct.unpack("<q", data[pos : pos + 8])
        if count != numel or pos + 8 + count * dtype.itemsize > len(data):
            raise ValueError(f"{path}: storage {key} is truncated or inconsistent.")
        storages[str(key)] = np.frombuffer(data, dtype, count=count, offset=pos + 8)
        pos += 8 + count * dtype.itemsize
    return _LegacyUnpickler(data[obj_start:obj_end], storages, allow_placeholders).load()
