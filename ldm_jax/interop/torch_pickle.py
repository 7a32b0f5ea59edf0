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

Every file is untrusted, so reading one is bounded before anything is inflated: `data.pkl` may
declare at most `MAX_PICKLE_BYTES`, an archive may hold at most `MAX_ENTRIES` members whose
declared sizes add up to at most `MAX_EXPANSION` times the file's size on disk (plus
`EXPANSION_SLACK`; `torch.save` stores members uncompressed, so a real file expands about 1x),
and each storage member must declare exactly the bytes its pickle reference says (element count
times element size). A tensor may not hold more elements than its storage unless it is small
(`MAX_BROADCAST_BYTES`), so stride-0 views cannot blow up either. Whatever is wrong with a file
(a refused global, a corrupt or truncated pickle or archive, sizes over these limits) ends in a
`CheckpointFormatError` naming the file; no other exception escapes `load_torch_file`, except
`OSError` when the file cannot be opened at all.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import os
import pickle
import pickletools
import struct
import zipfile
from collections.abc import Iterator
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


# Limits on what a file may ask to be inflated or allocated (see the module docstring).
MAX_PICKLE_BYTES = 256 << 20
MAX_ENTRIES = 100_000
MAX_EXPANSION = 16
EXPANSION_SLACK = 256 << 20
MAX_BROADCAST_BYTES = 64 << 20


class CheckpointFormatError(ValueError):
    """A file is not a readable `torch.save` file: corrupt, truncated, inconsistent, or over the
    module's size limits. The message names the file and the problem."""


class UnsafeCheckpointError(CheckpointFormatError, pickle.UnpicklingError):
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

    def __call__(self, *args: Any, **kwargs: Any) -> InertPlaceholder:
        """Calling a placeholder (e.g. the result of a placeholder `getattr`) makes another."""
        return _placeholder_class(f"{self.qualified_name}(...)")(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<inert placeholder for {self.qualified_name}>"


def _placeholder_class(qualified_name: str) -> type:
    return type("InertPlaceholder", (InertPlaceholder,), {"qualified_name": qualified_name})


def _rebuild_tensor(
    storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> np.ndarray:
    """numpy version of `torch._utils._rebuild_tensor_v2` (a strided view into a storage)."""
    if not isinstance(storage, np.ndarray):
        raise CheckpointFormatError(f"a tensor's storage is a {type(storage).__name__}.")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    offset = _ints((offset,), "offset")[0]
    if len(size) != len(stride):
        raise CheckpointFormatError(f"tensor size {size} and stride {stride} differ in length.")
    numel = functools.reduce(lambda a, b: a * b, size, 1)
    if numel == 0:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= storage.size:
        raise CheckpointFormatError(
            f"tensor of size {size}, stride {stride}, offset {offset} exceeds its storage "
            f"of {storage.size} elements."
        )
    if numel > storage.size and numel * storage.itemsize > MAX_BROADCAST_BYTES:
        raise CheckpointFormatError(
            f"tensor of size {size} (stride {stride}) would repeat its storage of "
            f"{storage.size} elements into {numel * storage.itemsize} bytes, over the "
            f"{MAX_BROADCAST_BYTES}-byte limit for such views."
        )
    view = np.lib.stride_tricks.as_strided(
        storage[offset:],
        shape=size,
        strides=tuple(s * storage.itemsize for s in stride),
        writeable=False,
    )
    return np.array(view, copy=True, order="C")


def _short(value: Any) -> str:
    """`repr(value)`, cut to 80 characters (values come from the file)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _ints(values: Any, what: str) -> tuple[int, ...]:
    """`values` as a tuple of non-negative Python ints, else `CheckpointFormatError`."""
    values = tuple(values)
    if not all(type(v) is int and v >= 0 for v in values):
        raise CheckpointFormatError(f"tensor {what} {_short(values)} is not a tuple of ints >= 0.")
    return values


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
    if not isinstance(dtype, _TorchDtype) or not isinstance(storage, np.ndarray):
        raise CheckpointFormatError("_rebuild_tensor_v3 without a storage and a torch dtype.")
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


def _fresh(fn: Any) -> Any:
    """A new callable per reference, so that a pickle's BUILD on it (which may set attributes
    such as `__defaults__`) changes nothing that another load, or this module, uses."""
    if isinstance(fn, type):
        return fn  # BUILD cannot set attributes of builtin types such as OrderedDict

    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return call


# EXT1/EXT2/EXT4 push the global registered with `copyreg.add_extension`; once any unpickler in
# the process has resolved a code, the C unpickler takes it from `copyreg._extension_cache`
# without calling `find_class`. torch.save never writes them, so they are refused outright.
_EXTENSION_OPCODES = ("EXT1", "EXT2", "EXT4")
_MEMO_OPCODES = ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE")


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only tensor-rebuilding globals; storages come from the zip archive."""

    def __init__(self, data: bytes, archive: _Archive | None, allow_placeholders: bool):
        super().__init__(io.BytesIO(data))
        self._data = data
        self._archive = archive
        self._allow_placeholders = allow_placeholders

    def load(self) -> Any:
        """Unpickles after a pass over the opcodes (parsed by `pickletools`, nothing run) that
        refuses the extension-registry opcodes (`_EXTENSION_OPCODES`) and memo indices beyond
        the pickle's own memo entries: the C unpickler grows its memo table to twice the index
        written, so `LONG_BINPUT 0xFFFFFFFF` alone would zero 64 GiB."""
        entries, indices = 0, []
        for opcode, arg, _ in pickletools.genops(self._data):
            if opcode.name in _EXTENSION_OPCODES:
                raise UnsafeCheckpointError(
                    f"Refusing to unpickle {opcode.name} (extension code {arg}): it resolves "
                    "globals through copyreg's process-wide cache, bypassing the allow-list."
                )
            if opcode.name in _MEMO_OPCODES:
                entries += 1
                if arg is not None:
                    indices.append(int(arg))
        if indices and max(indices) >= entries:
            raise CheckpointFormatError(
                f"the pickle writes memo entry {max(indices)} but has only {entries} memo "
                "writes (a memory bomb, not a pickle written by torch.save)."
            )
        return super().load()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_CALLABLES:
            return _fresh(_ALLOWED_CALLABLES[(module, name)])
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name in _TORCH_DTYPES:
            return _TorchDtype(name)
        if self._allow_placeholders:
            return _placeholder_class(f"{module}.{name}")
        shown = f"{module}.{name}"
        if not shown.isprintable() or len(shown) > 200:
            shown = _short(shown)  # names from the file: no line breaks in the message
        raise UnsafeCheckpointError(
            f"Refusing to unpickle global {shown}: only tensors, dicts and plain values "
            "are loaded from untrusted checkpoints. If the file is a training checkpoint that "
            "also pickles other objects, pass --allow_placeholders to python -m ldm_jax.convert "
            "(allow_placeholders=True in Python; they become inert placeholders, no code is "
            "run) or re-save just the state_dict."
        )

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointFormatError(f"unsupported persistent id {_short(pid)}.")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, (_StorageType, _TorchDtype)):
            raise CheckpointFormatError(
                f"storage {_short(key)} has an unsupported type {_short(storage_type)}."
            )
        if self._archive is None:
            raise CheckpointFormatError(
                f"a storage reference {_short(key)} outside a torch.save file."
            )
        numel = _ints((numel,), "storage size")[0]
        return self._archive.storage(str(key), storage_type.dtype, numel)


class _Archive:
    """The zip members of one `torch.save` file, storages read once and cached.

    Sizes are checked against the module's limits from the central directory, before anything
    is inflated, and every member is read through `_read`, which never returns more than the
    size the directory declares (zipfile stops there and checks the CRC)."""

    def __init__(self, zf: zipfile.ZipFile, file_size: int):
        self._zf = zf
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES:
            raise CheckpointFormatError(
                f"the archive has {len(infos)} members, over the limit of {MAX_ENTRIES}."
            )
        declared = sum(info.file_size for info in infos)
        budget = MAX_EXPANSION * file_size + EXPANSION_SLACK
        if declared > budget:
            raise CheckpointFormatError(
                f"the archive's members declare {declared} bytes, over the limit of {budget} "
                f"({MAX_EXPANSION}x its {file_size} bytes on disk + {EXPANSION_SLACK}): a zip "
                "bomb, not a torch.save file (which stores its members uncompressed)."
            )
        self._infos = {info.filename: info for info in infos}
        pkl = [n for n in self._infos if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise CheckpointFormatError("not a torch.save archive (no unique */data.pkl).")
        self.prefix = pkl[0][: -len("data.pkl")]
        self.pickle_bytes = self._read(pkl[0], MAX_PICKLE_BYTES)
        order = self.prefix + "byteorder"
        self.big_endian = order in self._infos and self._read(order, 16).strip() == b"big"
        self._cache: dict[str, np.ndarray] = {}

    def _read(self, name: str, limit: int) -> bytes:
        info = self._infos[name]
        if info.file_size > limit:
            raise CheckpointFormatError(
                f"member {name} declares {info.file_size} bytes, over its limit of {limit}."
            )
        with self._zf.open(info) as f:
            data = f.read(limit + 1)
        if len(data) != info.file_size:
            raise CheckpointFormatError(
                f"member {name} holds {len(data)} bytes but declares {info.file_size}."
            )
        return data

    def storage(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        """The storage `key` as `numel` elements of `dtype` (its member must hold exactly those)."""
        name = f"{self.prefix}data/{key}"
        if name not in self._infos:
            raise CheckpointFormatError(
                f"storage {_short(key)} has no member {_short(name)} in the archive."
            )
        nbytes = numel * dtype.itemsize
        if self._infos[name].file_size != nbytes:
            raise CheckpointFormatError(
                f"storage {_short(key)} of {numel} {dtype} elements needs {nbytes} bytes, but its "
                f"member declares {self._infos[name].file_size}."
            )
        if key not in self._cache:
            self._cache[key] = np.frombuffer(self._read(name, nbytes), np.uint8)
        raw = self._cache[key]
        if raw.size != nbytes:  # the same storage referenced again with another size
            raise CheckpointFormatError(
                f"storage {_short(key)} is referenced as {nbytes} and as {raw.size} bytes."
            )
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
      CheckpointFormatError: anything else wrong with the file (neither a zip-format nor a
        pre-1.6 torch.save file, corrupt, truncated, over the size limits); the base class of
        `UnsafeCheckpointError`, and a `ValueError`.
      OSError: the file cannot be opened.
    """
    if not zipfile.is_zipfile(path):
        return load_legacy_torch_file(path, allow_placeholders)
    with _as_format_error(path), zipfile.ZipFile(path) as zf:
        archive = _Archive(zf, os.path.getsize(path))
        return _RestrictedUnpickler(archive.pickle_bytes, archive, allow_placeholders).load()


@contextlib.contextmanager
def _as_format_error(path: str) -> Iterator[None]:
    """Turns whatever a malformed file makes the readers raise into one `CheckpointFormatError`
    naming `path` (a refused global stays the `UnsafeCheckpointError` it is)."""
    try:
        yield
    except UnsafeCheckpointError:
        raise  # its message names the global and the fix (--allow_placeholders) already
    except CheckpointFormatError as e:
        raise CheckpointFormatError(f"{path}: {e}") from None
    except RecursionError:
        raise CheckpointFormatError(f"{path}: the pickle nests too deeply.") from None
    except MemoryError:
        raise CheckpointFormatError(
            f"{path}: the pickle asks for more memory than there is."
        ) from None
    except Exception as e:  # noqa: BLE001 - any other failure is a malformed file
        reason = " ".join(str(e).split())[:300] or "no details"
        raise CheckpointFormatError(
            f"{path}: not a readable torch.save file ({type(e).__name__}: {reason})."
        ) from None


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
        raise CheckpointFormatError(f"{path}: expected a state dict, found {type(obj).__name__}.")
    return {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
_LEGACY_HEAD = 4096  # bytes read to recognise a pre-1.6 file before reading all of it


class _LegacyUnpickler(_RestrictedUnpickler):
    """The restricted unpickler with pre-1.6 storage references
    ('storage', type, key, location, numel, view): the storages follow the pickle in the file,
    so a first pass (`storages=None`) records them and builds tensors on zero storages; a
    storage may not declare more bytes than the file holds."""

    def __init__(
        self,
        data: bytes,
        storages: dict[str, np.ndarray] | None,
        allow_placeholders: bool,
        max_bytes: int = 0,
    ):
        super().__init__(data, None, allow_placeholders)
        self.storages = storages
        self.max_bytes = max_bytes
        self.seen: dict[str, tuple[np.dtype, int]] = {}

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise CheckpointFormatError(f"unsupported persistent id {_short(pid)}.")
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType) or view is not None:
            raise CheckpointFormatError(f"unsupported storage reference {_short(pid)}.")
        numel = _ints((numel,), "storage size")[0]
        if self.storages is None:
            if numel * storage_type.dtype.itemsize > self.max_bytes:
                raise CheckpointFormatError(
                    f"storage {_short(key)} declares {numel} {storage_type.dtype} elements, more "
                    f"than the file's {self.max_bytes} bytes hold."
                )
            self.seen[str(key)] = (storage_type.dtype, numel)
            return np.zeros(numel, storage_type.dtype)
        if str(key) not in self.storages or self.storages[str(key)].dtype != storage_type.dtype:
            raise CheckpointFormatError(f"storage {_short(key)} is not among the file's storages.")
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
    except Exception:  # noqa: BLE001 - any failure means "not such a file"
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
      UnsafeCheckpointError: a global outside the allow-list.
      CheckpointFormatError: not a pre-1.6 torch file, big-endian, corrupt or truncated.
      OSError: the file cannot be opened.
    """
    with open(path, "rb") as f:
        if not is_legacy_torch_file(f.read(_LEGACY_HEAD)):
            raise CheckpointFormatError(
                f"{path}: neither a zip-format nor a pre-1.6 torch.save file."
            )
        f.seek(0)
        data = f.read()
    with _as_format_error(path):
        return _load_legacy(data, allow_placeholders)


def _load_legacy(data: bytes, allow_placeholders: bool) -> Any:
    pos = _pickle_end(data, _pickle_end(data, 0))
    info_end = _pickle_end(data, pos)
    info = _plain(data[pos:info_end])
    if isinstance(info, dict) and not info.get("little_endian", True):
        raise CheckpointFormatError("big-endian legacy torch files are not supported.")
    obj_start, obj_end = info_end, _pickle_end(data, info_end)
    first = _LegacyUnpickler(data[obj_start:obj_end], None, allow_placeholders, len(data))
    first.load()
    keys_end = _pickle_end(data, obj_end)
    keys = _plain(data[obj_end:keys_end])
    if not isinstance(keys, list):
        raise CheckpointFormatError(f"the storage key list is a {type(keys).__name__}.")
    storages, pos = {}, keys_end
    for key in keys:
        if str(key) not in first.seen:
            raise CheckpointFormatError(f"storage {key} is listed but never used.")
        dtype, numel = first.seen[str(key)]
        if pos + 8 > len(data):
            raise CheckpointFormatError(f"storage {key} is truncated.")
        (count,) = struct.unpack("<q", data[pos : pos + 8])
        if count != numel or pos + 8 + count * dtype.itemsize > len(data):
            raise CheckpointFormatError(f"storage {key} is truncated or inconsistent.")
        storages[str(key)] = np.frombuffer(data, dtype, count=count, offset=pos + 8)
        pos += 8 + count * dtype.itemsize
    return _LegacyUnpickler(data[obj_start:obj_end], storages, allow_placeholders).load()
