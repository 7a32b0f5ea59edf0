"""Fuzzing the restricted unpickler: whatever the bytes, `load_torch_file` returns or raises its
documented `CheckpointFormatError` (`UnsafeCheckpointError` is one), never another exception,
and quickly. Inputs: random bytes, random opcode sequences over the allowed globals (which
reach the tensor rebuilders with arbitrary arguments), and mutated real `torch.save` files in
both formats (the zip's pickle re-zipped with a valid CRC, so mutations reach the unpickler).
"""

from __future__ import annotations

import io
import pickle
import struct
import time
import zipfile

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ldm_jax.interop.torch_pickle import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    load_torch_file,
)
from tests.interop.reference import torch

SECONDS = 2.0  # the most one load may take


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _saved(legacy: bool) -> bytes:
    buf = io.BytesIO()
    sd = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2).half(), "n": 3}
    torch.save({"state_dict": sd}, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


ZIP, LEGACY = _saved(False), _saved(True)


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


MEMBERS = _members(ZIP)
PKL = next(name for name in MEMBERS if name.endswith("/data.pkl"))


def _check(path: str, placeholders: bool = False) -> None:
    """Loads `path`; only `CheckpointFormatError` may escape, within `SECONDS`."""
    start = time.perf_counter()
    try:
        load_torch_file(path, allow_placeholders=placeholders)
    except UnsafeCheckpointError as e:
        assert str(e).startswith("Refusing to unpickle ") and "\n" not in str(e), str(e)
    except CheckpointFormatError as e:
        assert str(e).startswith(path) and "\n" not in str(e), str(e)
    assert time.perf_counter() - start < SECONDS


def _write(scratch, data: bytes, name: str = "f.ckpt") -> str:
    path = scratch / name
    path.write_bytes(data)
    return str(path)


def _zip(pickle_bytes: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in MEMBERS.items():
            zf.writestr(name, pickle_bytes if name == PKL else data)
    return buf.getvalue()


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out if cut is None else out[: cut % (len(out) + 1)])


EDITS = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6)
CUT = st.none() | st.integers(0, 1 << 20)


def test_the_unmutated_files_load(scratch):
    """The seeds of the mutations are valid files (so mutations start from real structure)."""
    for data in (ZIP, LEGACY, _zip(MEMBERS[PKL])):
        want = torch.load(io.BytesIO(data), weights_only=True)["state_dict"]
        got = load_torch_file(_write(scratch, data))["state_dict"]
        assert got["n"] == 3 and got["w"].tolist() == want["w"].tolist()


@given(st.binary(max_size=4096))
def test_random_bytes(scratch, data):
    _check(_write(scratch, data))
    _check(_write(scratch, _zip(data), "z.ckpt"))  # as the pickle of a torch.save archive


@given(EDITS, CUT, st.booleans())
def test_mutated_zip_pickles(scratch, edits, cut, placeholders):
    _check(_write(scratch, _zip(_mutate(MEMBERS[PKL], edits, cut))), placeholders)


@given(EDITS, CUT)
def test_mutated_zip_files(scratch, edits, cut):
    _check(_write(scratch, _mutate(ZIP, edits, cut)))


@given(EDITS, CUT, st.booleans())
def test_mutated_pre_zip_files(scratch, edits, cut, placeholders):
    _check(_write(scratch, _mutate(LEGACY, edits, cut)), placeholders)


def _g(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


# Opcode chunks: containers, numbers (small, huge, negative), strings, the allowed globals and
# the calls that reach them (so random programs call the tensor rebuilders with random args).
CHUNKS = [
    pickle.MARK,
    pickle.NONE,
    pickle.NEWTRUE,
    pickle.NEWFALSE,
    pickle.EMPTY_DICT,
    pickle.EMPTY_LIST,
    pickle.EMPTY_TUPLE,
    pickle.BININT1 + b"\x00",
    pickle.BININT1 + b"\x03",
    pickle.BININT + struct.pack("<i", -5),
    pickle.BININT + struct.pack("<i", 2**31 - 1),
    pickle.LONG1 + b"\x09" + b"\xff" * 8 + b"\x7f",
    pickle.BINFLOAT + struct.pack(">d", float("nan")),
    pickle.SHORT_BINUNICODE + b"\x01w",
    pickle.SHORT_BINUNICODE + b"\x01" + b"0",
    pickle.SHORT_BINUNICODE + b"\x07storage",
    pickle.SHORT_BINUNICODE + b"\x03cpu",
    pickle.SHORT_BINBYTES + b"\x02ab",
    _g("torch._utils", "_rebuild_tensor_v2"),
    _g("torch._utils", "_rebuild_tensor_v3"),
    _g("torch._utils", "_rebuild_parameter"),
    _g("collections", "OrderedDict"),
    _g("torch", "FloatStorage"),
    _g("torch", "float16"),
    _g("os", "system"),
    pickle.TUPLE,
    pickle.TUPLE1,
    pickle.TUPLE2,
    pickle.TUPLE3,
    pickle.LIST,
    pickle.DICT,
    pickle.REDUCE,
    pickle.BUILD,
    pickle.NEWOBJ,
    pickle.SETITEM,
    pickle.SETITEMS,
    pickle.APPEND,
    pickle.APPENDS,
    pickle.BINPERSID,
    pickle.POP,
    pickle.POP_MARK,
    pickle.DUP,
    pickle.MEMOIZE,
    pickle.BINPUT + b"\x00",
    pickle.BINGET + b"\x00",
    pickle.BINGET + b"\x07",
    pickle.STOP,
]


@hsettings(max_examples=150)
@given(st.lists(st.sampled_from(CHUNKS), max_size=60), st.booleans())
def test_random_opcode_programs(scratch, chunks, placeholders):
    data = pickle.PROTO + b"\x04" + b"".join(chunks) + pickle.STOP
    _check(_write(scratch, _zip(data)), placeholders)
