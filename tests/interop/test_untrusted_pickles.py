"""Untrusted `.ckpt` files: any global outside the allow-list is refused and nothing from the
file runs (every payload would create a sentinel file); zip bombs are refused before inflating.

The payloads are hand-assembled opcode by opcode for every way a pickle names and calls a global
(GLOBAL, STACK_GLOBAL, INST, OBJ, REDUCE, NEWOBJ, NEWOBJ_EX, BUILD, the extension registry) under
protocols 0-5, and also written by a real `torch.save` (zip and pre-1.6 formats).
"""

from __future__ import annotations

import builtins
import copyreg
import importlib
import io
import os
import pickle
import struct
import subprocess
import zipfile

import numpy as np
import pytest

from ldm_jax.interop import torch_pickle
from ldm_jax.interop.torch_pickle import (
    CheckpointFormatError,
    InertPlaceholder,
    UnsafeCheckpointError,
    load_state_dict,
    load_torch_file,
)
from tests.interop.reference import torch

SENTINEL = "ldm_jax_pwned"


def _globals(sentinel: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(module, name, string args): each call, were it made, would create `sentinel`."""
    shell = f"touch {sentinel}"
    code = f"open({sentinel!r}, 'w').close()"
    return [
        ("os", "system", (shell,)),
        ("posix", "system", (shell,)),  # how pickle itself names os.system
        ("builtins", "eval", (code,)),
        ("builtins", "exec", (code,)),
        ("__builtin__", "eval", (code,)),  # Python 2 name (mapped by the default find_class)
        ("builtins", "open", (sentinel, "w")),
        ("io", "open", (sentinel, "w")),
        ("subprocess", "getoutput", (shell,)),
        ("subprocess", "Popen", (shell,)),
        ("os", "popen", (shell,)),
        ("importlib", "import_module", ("os",)),
        ("builtins", "getattr", ("os", "system")),
        ("builtins", "__import__", ("os",)),
        ("copy_reg", "_reconstructor", (shell,)),  # Python 2 name of copyreg
        ("copyreg", "_reconstructor", (shell,)),
        ("torch.storage", "_load_from_bytes", (shell,)),  # torch's nested-pickle path
        ("torch", "load", (sentinel,)),
        ("numpy.core.multiarray", "_reconstruct", (shell,)),
        # Look-alikes of allowed names.
        ("torch._utils.os", "system", (shell,)),
        ("torch._utils", "os.system", (shell,)),
        ("torch._utils", "_rebuild_tensor_v2.__globals__", (shell,)),
        ("collections", "OrderedDict.__class__", (shell,)),
        ("collections.OrderedDict", "__class__", (shell,)),
        ("torch", "FloatStorage.__init__", (shell,)),
        ("torch._utils ", "_rebuild_tensor_v2", (shell,)),
        ("Torch._utils", "_rebuild_tensor_v2", (shell,)),
        ("torch", "_utils", (shell,)),
        ("torch.nn.modules.module", "Module", (shell,)),
    ]


def _text(value: str, proto: int) -> bytes:
    data = value.encode("utf-8")
    if proto < 1:
        return pickle.UNICODE + value.encode("raw_unicode_escape") + b"\n"
    if proto < 4:
        return pickle.BINUNICODE + struct.pack("<I", len(data)) + data
    return pickle.SHORT_BINUNICODE + bytes([len(data)]) + data


def _args(args: tuple[str, ...], proto: int) -> bytes:
    return pickle.MARK + b"".join(_text(a, proto) for a in args) + pickle.TUPLE


def _global(module: str, name: str, proto: int) -> bytes:
    if proto >= 4:
        return _text(module, proto) + _text(name, proto) + pickle.STACK_GLOBAL
    return pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n"


def _header(proto: int) -> bytes:
    return pickle.PROTO + bytes([proto]) if proto >= 2 else b""


# style -> pickle bytes calling module.name(*args) (or instantiating it)
STYLES = {
    **{
        f"reduce_p{p}": (
            lambda m, n, a, p=p: _header(p) + _global(m, n, p) + _args(a, p) + pickle.REDUCE
        )
        for p in range(6)
    },
    "global_in_p4": lambda m, n, a: _header(4) + _global(m, n, 0) + _args(a, 4) + pickle.REDUCE,
    "inst_p0": lambda m, n, a: (
        pickle.MARK + b"".join(_text(x, 0) for x in a) + pickle.INST + f"{m}\n{n}\n".encode()
    ),
    "obj_p1": lambda m, n, a: (
        pickle.MARK + _global(m, n, 1) + b"".join(_text(x, 1) for x in a) + pickle.OBJ
    ),
    "newobj_p2": lambda m, n, a: _header(2) + _global(m, n, 2) + _args(a, 2) + pickle.NEWOBJ,
    "newobj_ex_p4": lambda m, n, a: (
        _header(4) + _global(m, n, 4) + _args(a, 4) + pickle.EMPTY_DICT + pickle.NEWOBJ_EX
    ),
    "build_p2": lambda m, n, a: (
        _header(2)
        + _global(m, n, 2)
        + pickle.EMPTY_TUPLE
        + pickle.REDUCE
        + pickle.EMPTY_DICT
        + _text("state", 2)
        + _args(a, 2)
        + pickle.SETITEM
        + pickle.BUILD
    ),
    "memo_p2": lambda m, n, a: (
        _header(2)
        + _global(m, n, 2)
        + pickle.BINPUT
        + b"\x00"
        + pickle.POP
        + pickle.BINGET
        + b"\x00"
        + _args(a, 2)
        + pickle.REDUCE
    ),
    "in_dict_p2": lambda m, n, a: (
        _header(2)
        + pickle.EMPTY_DICT
        + _text("state_dict", 2)
        + _global(m, n, 2)
        + _args(a, 2)
        + pickle.REDUCE
        + pickle.SETITEM
    ),
}


def _ckpt(path, pickle_bytes: bytes, storages: dict[str, bytes] | None = None) -> str:
    """A torch.save-layout zip around `pickle_bytes` (+ STOP)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle_bytes + pickle.STOP)
        zf.writestr("archive/version", "3\n")
        for key, raw in (storages or {}).items():
            zf.writestr(f"archive/data/{key}", raw)
    return str(path)


CASES = [
    pytest.param(style, m, n, id=f"{style}-{m}.{n}")
    for style in STYLES
    for m, n, _ in _globals("x")
]


@pytest.fixture()
def sentinel(tmp_path, monkeypatch):
    """A path that any payload would create; the tests run in its folder (relative `touch`)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / SENTINEL
    yield path
    assert not path.exists(), "a payload ran"


@pytest.mark.parametrize("style, module, name", CASES)
def test_every_global_outside_the_allow_list_is_refused(tmp_path, sentinel, style, module, name):
    args = {(m, n): a for m, n, a in _globals(str(sentinel))}[(module, name)]
    data = STYLES[style](module, name, args)
    path = _ckpt(tmp_path / "evil.ckpt", data)
    with pytest.raises(UnsafeCheckpointError, match=f"global {module}.{name}:") as e:
        load_torch_file(path)
    assert str(e.value).startswith("Refusing to unpickle global") and "\n" not in str(e.value)
    # Placeholders load it, but never call the global or anything else.
    obj = load_torch_file(path, allow_placeholders=True)
    if isinstance(obj, dict):
        obj = obj["state_dict"]
    assert isinstance(obj, (InertPlaceholder, type)), obj
    assert not sentinel.exists()


def test_the_sentinel_payloads_do_run_under_the_standard_pickle(tmp_path, sentinel):
    """The payloads are real: the standard unpickler runs them (so the tests above could fail)."""
    for module, name in (("posix", "system"), ("builtins", "exec"), ("builtins", "open")):
        args = {(m, n): a for m, n, a in _globals(str(sentinel))}[(module, name)]
        for style in ("reduce_p0", "reduce_p4", "inst_p0", "obj_p1"):
            pickle.loads(STYLES[style](module, name, args) + pickle.STOP)
            assert sentinel.exists(), (style, module, name)
            sentinel.unlink()


def test_placeholders_keep_arguments_and_call_nothing(tmp_path, sentinel):
    shell = f"touch {sentinel}"
    data = STYLES["reduce_p2"]("posix", "system", (shell,))
    obj = load_torch_file(_ckpt(tmp_path / "p.ckpt", data), allow_placeholders=True)
    assert isinstance(obj, InertPlaceholder) and obj.args == (shell,)
    assert repr(obj) == "<inert placeholder for posix.system>"
    built = load_torch_file(
        _ckpt(tmp_path / "b.ckpt", STYLES["build_p2"]("posix", "system", (shell,))),
        allow_placeholders=True,
    )
    assert built.state == {"state": (shell,)}  # BUILD only stored its state


class _Reduces:
    """Pickled by `torch.save` as `func(*args)`."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _torch_payloads(sentinel) -> dict[str, object]:
    shell = f"touch {sentinel}"
    code = f"open({str(sentinel)!r}, 'w').close()"
    return {
        "os.system": _Reduces(os.system, shell),
        "builtins.eval": _Reduces(builtins.eval, code),
        "builtins.exec": _Reduces(builtins.exec, code),
        "subprocess.Popen": _Reduces(subprocess.Popen, ["touch", str(sentinel)]),
        "importlib.import_module": _Reduces(importlib.import_module, "os"),
        "builtins.getattr": _Reduces(getattr, _Reduces(importlib.import_module, "os"), "system"),
        "pathlib.Path.touch": _Reduces(sentinel.touch),
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "pre1.6"])
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_real_torch_save_payloads_are_refused(tmp_path, sentinel, protocol, legacy):
    refused = 0
    for what, payload in _torch_payloads(sentinel).items():
        path = tmp_path / f"{what}.ckpt"
        torch.save(
            {"state_dict": {"w": torch.ones(2)}, "hparams": payload},
            path,
            pickle_protocol=protocol,
            _use_new_zipfile_serialization=not legacy,
        )
        with pytest.raises(UnsafeCheckpointError, match="Refusing to unpickle global"):
            load_state_dict(str(path))
        sd = load_state_dict(str(path), allow_placeholders=True)
        np.testing.assert_array_equal(sd["w"], np.ones(2, np.float32))
        refused += 1
    assert refused == 7 and not sentinel.exists()


def test_extension_codes_are_refused_even_when_cached(tmp_path, sentinel):
    """EXT opcodes resolve through copyreg's process-wide cache, which `find_class` never sees
    once another unpickler has resolved the code: the restricted unpickler refuses them."""
    code = 0x7ABC
    copyreg.add_extension("posix", "system", code)
    try:
        ext = pickle.EXT2 + struct.pack("<H", code)
        assert pickle.loads(_header(2) + ext + pickle.STOP) is os.system  # now cached
        data = _header(2) + ext + _args((f"touch {sentinel}",), 2) + pickle.REDUCE
        for placeholders in (False, True):
            with pytest.raises(UnsafeCheckpointError, match="EXT2"):
                load_torch_file(_ckpt(tmp_path / "ext.ckpt", data), placeholders)
    finally:
        copyreg.remove_extension("posix", "system", code)


def test_build_cannot_change_the_allowed_functions(tmp_path):
    """BUILD with slot state sets attributes of what it is applied to; applied to an allowed
    rebuild function, it must not change the function other loads use."""
    g = _global("torch._utils", "_rebuild_parameter", 2)
    slots = pickle.NONE + pickle.EMPTY_DICT + _text("__defaults__", 2)
    slots += _text("evil", 2) + pickle.TUPLE1 + pickle.SETITEM + pickle.TUPLE2
    data = _header(2) + g + slots + pickle.BUILD + pickle.POP + pickle.EMPTY_DICT
    assert load_torch_file(_ckpt(tmp_path / "build.ckpt", data)) == {}
    assert torch_pickle._rebuild_parameter.__defaults__ is None
    # And a real file still loads the same afterwards.
    torch.save({"p": torch.nn.Parameter(torch.arange(3.0))}, tmp_path / "ok.ckpt")
    np.testing.assert_array_equal(
        load_state_dict(str(tmp_path / "ok.ckpt"))["p"], np.arange(3.0, dtype=np.float32)
    )


def test_a_nested_pickle_is_only_bytes(tmp_path, sentinel):
    """A pickle inside the file (as a value, or as a storage's bytes) is data, never loaded."""
    inner = STYLES["reduce_p2"]("posix", "system", (f"touch {sentinel}",)) + pickle.STOP
    outer = pickle.dumps({"blob": inner}, protocol=3)[:-1]
    assert load_torch_file(_ckpt(tmp_path / "n.ckpt", outer)) == {"blob": inner}
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(len(inner), dtype=torch.uint8)}, buf)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(tmp_path / "s.ckpt", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, inner if "/data/" in info.filename else data)
    got = load_state_dict(str(tmp_path / "s.ckpt"))["w"]
    assert got.tobytes() == inner


def _legacy(tmp_path, pickles: list[bytes]) -> str:
    """A pre-1.6 file from its pickles: magic, protocol, sys info, object, keys (no storages)."""
    path = tmp_path / "legacy.pt"
    path.write_bytes(b"".join(p + pickle.STOP for p in pickles))
    return str(path)


def test_pre_zip_files_refuse_globals_in_every_pickle(tmp_path, sentinel):
    evil = STYLES["reduce_p2"]("posix", "system", (f"touch {sentinel}",))
    magic = pickle.dumps(torch_pickle.LEGACY_MAGIC, protocol=2)[:-1]
    proto = pickle.dumps(torch_pickle.LEGACY_PROTOCOL, protocol=2)[:-1]
    info = pickle.dumps({"little_endian": True}, protocol=2)[:-1]
    obj = pickle.dumps({"n": 1}, protocol=2)[:-1]
    keys = pickle.dumps([], protocol=2)[:-1]
    assert load_torch_file(_legacy(tmp_path, [magic, proto, info, obj, keys])) == {"n": 1}
    for i in range(2, 5):  # sys info, object, storage keys
        pickles = [magic, proto, info, obj, keys]
        pickles[i] = evil
        with pytest.raises(UnsafeCheckpointError, match="posix.system"):
            load_torch_file(_legacy(tmp_path, pickles))
    for i in range(2):  # in the magic number or protocol: not recognised as a torch file
        pickles = [magic, proto, info, obj, keys]
        pickles[i] = evil
        with pytest.raises(CheckpointFormatError, match="neither a zip-format nor a pre-1.6"):
            load_torch_file(_legacy(tmp_path, pickles))


def test_pre_zip_storages_cannot_claim_more_than_the_file(tmp_path):
    magic = pickle.dumps(torch_pickle.LEGACY_MAGIC, protocol=2)[:-1]
    proto = pickle.dumps(torch_pickle.LEGACY_PROTOCOL, protocol=2)[:-1]
    info = pickle.dumps({"little_endian": True}, protocol=2)[:-1]
    ref = _global("torch", "FloatStorage", 2)
    pid = pickle.MARK + _text("storage", 2) + ref + _text("0", 2) + _text("cpu", 2)
    pid += pickle.BININT + struct.pack("<i", 2**30) + pickle.NONE + pickle.TUPLE
    obj = pid + pickle.BINPERSID
    with pytest.raises(CheckpointFormatError, match="more than the file's"):
        load_torch_file(_legacy(tmp_path, [magic, proto, info, obj, pickle.EMPTY_LIST]))


# ----------------------------------------------------------------------------- zip bombs


def _tensor_pickle(key: str, numel: int) -> bytes:
    """{"w": a float32 tensor [numel] on storage `key`} as torch.save's pickle (no STOP)."""
    pid = pickle.MARK + _text("storage", 2) + _global("torch", "FloatStorage", 2)
    pid += _text(key, 2) + _text("cpu", 2) + pickle.BININT + struct.pack("<i", numel)
    pid += pickle.TUPLE + pickle.BINPERSID
    rebuild = _global("torch._utils", "_rebuild_tensor_v2", 2) + pickle.MARK + pid
    rebuild += pickle.BININT + struct.pack("<i", 0)
    rebuild += pickle.MARK + pickle.BININT + struct.pack("<i", numel) + pickle.TUPLE
    rebuild += pickle.MARK + pickle.BININT1 + b"\x01" + pickle.TUPLE
    rebuild += pickle.NEWFALSE + pickle.NONE + pickle.TUPLE + pickle.REDUCE
    return _header(2) + pickle.EMPTY_DICT + _text("w", 2) + rebuild + pickle.SETITEM


def test_a_hand_made_tensor_pickle_loads(tmp_path):
    raw = np.arange(4, dtype=np.float32).tobytes()
    path = _ckpt(tmp_path / "ok.ckpt", _tensor_pickle("0", 4), {"0": raw})
    np.testing.assert_array_equal(load_state_dict(path)["w"], np.arange(4, dtype=np.float32))


def _set_declared_size(path, member: str, size: int) -> None:
    """Rewrites the uncompressed size of `member` in the zip's central directory (a lie)."""
    data = bytearray(open(path, "rb").read())
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        n, m, k = struct.unpack("<HHH", data[pos + 28 : pos + 34])
        if data[pos + 46 : pos + 46 + n].decode() == member:
            data[pos + 24 : pos + 28] = struct.pack("<I", size)
        pos = data.find(b"PK\x01\x02", pos + 46 + n + m + k)
    open(path, "wb").write(bytes(data))


def test_declared_sizes_over_the_budget_are_refused_before_inflating(tmp_path):
    path = _ckpt(tmp_path / "bomb.ckpt", _tensor_pickle("0", 4), {"0": bytes(16)})
    _set_declared_size(path, "archive/data/0", 3 << 30)  # 3 GiB from a file of ~500 bytes
    with pytest.raises(CheckpointFormatError, match="zip bomb") as e:
        load_torch_file(path)
    assert "\n" not in str(e.value) and str(e.value).startswith(path)


def test_a_storage_must_declare_exactly_what_its_tensors_need(tmp_path):
    path = _ckpt(tmp_path / "big.ckpt", _tensor_pickle("0", 4), {"0": bytes(4 << 20)})
    with pytest.raises(CheckpointFormatError, match="needs 16 bytes, but its member declares"):
        load_torch_file(path)


def test_a_lying_small_declared_size_fails_the_crc_not_memory(tmp_path):
    path = _ckpt(tmp_path / "lie.ckpt", _tensor_pickle("0", 4), {"0": bytes(16)})
    _set_declared_size(path, "archive/data/0", 8)  # inflates to 16, declares 8
    with pytest.raises(CheckpointFormatError, match="needs 16 bytes"):
        load_torch_file(path)
    path = _ckpt(tmp_path / "lie2.ckpt", _tensor_pickle("0", 2), {"0": bytes(16)})
    _set_declared_size(path, "archive/data/0", 8)
    with pytest.raises(CheckpointFormatError, match="CRC|holds|Bad"):
        load_torch_file(path)


def test_highly_compressible_members_are_refused(tmp_path, monkeypatch):
    """A real deflated bomb: 16 MiB of zeros in ~16 KiB, with the budget scaled down (the
    defaults refuse the same ratio from 256 MiB up)."""
    monkeypatch.setattr(torch_pickle, "EXPANSION_SLACK", 1 << 20)
    n = 4 << 20
    path = str(tmp_path / "zeros.ckpt")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", _tensor_pickle("0", n) + pickle.STOP)
        zf.writestr("archive/data/0", bytes(4 * n))
    assert os.path.getsize(path) < 64 << 10
    with pytest.raises(CheckpointFormatError, match="over the limit of"):
        load_torch_file(path)
    monkeypatch.setattr(torch_pickle, "EXPANSION_SLACK", 32 << 20)  # within budget: loads
    assert load_state_dict(path)["w"].shape == (n,)


def test_too_many_members_and_a_huge_pickle_are_refused(tmp_path, monkeypatch):
    path = str(tmp_path / "many.ckpt")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        for i in range(50):
            zf.writestr(f"archive/data/{i}", b"")
    monkeypatch.setattr(torch_pickle, "MAX_ENTRIES", 40)
    with pytest.raises(CheckpointFormatError, match="51 members, over the limit of 40"):
        load_torch_file(path)
    monkeypatch.setattr(torch_pickle, "MAX_PICKLE_BYTES", 4)
    monkeypatch.setattr(torch_pickle, "MAX_ENTRIES", 100)
    with pytest.raises(CheckpointFormatError, match="data.pkl declares"):
        load_torch_file(path)


def test_broadcast_views_cannot_allocate_unbounded_memory(tmp_path):
    """A stride-0 tensor of 2**40 elements over a 1-element storage is refused, not allocated."""
    pid = pickle.MARK + _text("storage", 2) + _global("torch", "FloatStorage", 2)
    pid += _text("0", 2) + _text("cpu", 2) + pickle.BININT1 + b"\x01" + pickle.TUPLE
    pid += pickle.BINPERSID
    rebuild = _global("torch._utils", "_rebuild_tensor_v2", 2) + pickle.MARK + pid
    rebuild += pickle.BININT1 + b"\x00"
    rebuild += pickle.MARK + (pickle.BININT + struct.pack("<i", 2**20)) * 2 + pickle.TUPLE
    rebuild += pickle.MARK + pickle.BININT1 + b"\x00" + pickle.BININT1 + b"\x00" + pickle.TUPLE
    rebuild += pickle.NEWFALSE + pickle.NONE + pickle.TUPLE + pickle.REDUCE
    path = _ckpt(tmp_path / "bcast.ckpt", _header(2) + rebuild, {"0": bytes(4)})
    with pytest.raises(CheckpointFormatError, match="would repeat its storage"):
        load_torch_file(path)


def test_a_memo_index_bomb_is_refused_before_unpickling(tmp_path):
    """`LONG_BINPUT i` makes the C unpickler zero a memo table of 2i pointers: a 12-byte pickle
    with i = 2**32 - 1 would take 64 GiB. Refused from the opcodes, before anything is built."""
    for index in (2**25, 2**32 - 1):
        data = _header(2) + pickle.NONE + pickle.LONG_BINPUT + struct.pack("<I", index)
        with pytest.raises(CheckpointFormatError, match=f"memo entry {index} but has only 1"):
            load_torch_file(_ckpt(tmp_path / "memo.ckpt", data))
    # Sequential memo entries, as every pickler writes them, are fine.
    ok = pickle.dumps({"a": [1, 2], "b": [3]}, protocol=2)[:-1]
    assert load_torch_file(_ckpt(tmp_path / "ok.ckpt", ok)) == {"a": [1, 2], "b": [3]}


def test_refusals_stay_one_line_whatever_the_names(tmp_path):
    """STACK_GLOBAL takes its names from strings, which may hold line breaks or be huge."""
    for module in ("os\nsystem", "a" * 5000):
        raw = module.encode()
        data = _header(4) + pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw
        data += _text("x", 4) + pickle.STACK_GLOBAL
        with pytest.raises(UnsafeCheckpointError) as e:
            load_torch_file(_ckpt(tmp_path / "names.ckpt", data))
        assert "\n" not in str(e.value) and len(str(e.value)) < 600
