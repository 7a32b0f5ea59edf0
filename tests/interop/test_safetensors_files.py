"""Safetensors files from outside: a malformed header, a truncated file, or tensors of the wrong
dtype or shape are refused with one error naming them, before any model is built or compiled."""

from __future__ import annotations

import json
import re
import struct

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ldm_jax import convert
from ldm_jax.interop import diffusers as interop_diffusers
from ldm_jax.interop.safetensors_file import read_header, read_safetensors
from ldm_jax.interop.tensors import WeightMismatchError, assemble
from ldm_jax.interop.torch_pickle import CheckpointFormatError
from tests.interop import reference as ref


def _file(path, header: object, data: bytes = b"", length: int | None = None) -> str:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    n = len(raw) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return str(path)


def test_valid_files_read_as_the_library_reads_them(tmp_path):
    tensors = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.ones((0, 4), np.float16),
        "c": np.array(7, np.int64),
    }
    path = str(tmp_path / "ok.safetensors")
    save_file(tensors, path, metadata={"format": "np"})
    got = read_safetensors(path)
    want = load_file(path)
    assert set(got) == set(want) == set(tensors)
    for k in tensors:
        assert got[k].dtype == tensors[k].dtype and got[k].shape == tensors[k].shape
        np.testing.assert_array_equal(got[k], want[k])
    entries, metadata = read_header(path)
    assert metadata == {"format": "np"} and entries["a"].shape == (2, 3)


def _valid(tmp_path) -> tuple[str, bytes]:
    path = str(tmp_path / "v.safetensors")
    save_file({"w": np.arange(4, dtype=np.float32)}, path)
    return path, open(path, "rb").read()


BAD_HEADERS = {
    "empty": (b"", None, b"", "shorter than the 8-byte header length"),
    "header_past_end": (b"{}", 10**6, b"", "the header claims 1000000 bytes"),
    "not_json": (b"{not json", None, b"", "the header is not JSON"),
    "not_utf8": (b'{"\xff": 1}', None, b"", "the header is not JSON"),
    "a_list": (b"[1, 2]", None, b"", "a JSON list, not an object"),
    "entry_not_object": ({"w": 3}, None, b"", "described by a int"),
    "unknown_dtype": (
        {"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}},
        None,
        bytes(16),
        "unknown dtype 'F128'",
    ),
    "negative_shape": (
        {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}},
        None,
        bytes(4),
        "bad shape [-1]",
    ),
    "float_shape": (
        {"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}},
        None,
        bytes(4),
        "bad shape [1.5]",
    ),
    "offsets_reversed": (
        {"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}},
        None,
        bytes(4),
        "bad data_offsets [4, 0]",
    ),
    "offsets_past_eof": (
        {"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}},
        None,
        bytes(4),
        "past its end (4 bytes): the file is truncated",
    ),
    "span_mismatch": (
        {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}},
        None,
        bytes(4),
        "needs 8 bytes, its data_offsets span 4",
    ),
    "huge_shape": (
        {"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 4]}},
        None,
        bytes(4),
        "data_offsets span 4",
    ),
    "metadata_not_object": ({"__metadata__": [1]}, None, b"", "__metadata__ is not an object"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_malformed_headers_are_one_line_errors(tmp_path, case):
    header, length, data, message = BAD_HEADERS[case]
    path = _file(tmp_path / f"{case}.safetensors", header, data, length)
    if case == "empty":
        (tmp_path / f"{case}.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointFormatError, match=re.escape(message)) as e:
        read_safetensors(path)
    text = str(e.value)
    assert text.startswith(f"{path}: not a valid safetensors file: ") and "\n" not in text


def test_truncated_files_are_refused_before_reading(tmp_path):
    path, raw = _valid(tmp_path)
    for cut in (4, 12, len(raw) - 1):
        open(path, "wb").write(raw[:cut])
        with pytest.raises(CheckpointFormatError, match="not a valid safetensors file"):
            read_safetensors(path)


def test_the_library_alone_would_not_give_a_user_error(tmp_path):
    """Without the header check, the same truncated file raises the library's own exception
    type (not a ValueError the CLIs report), which is why every reader goes through ours."""
    path, raw = _valid(tmp_path)
    open(path, "wb").write(raw[:-1])
    with pytest.raises(Exception) as e:
        load_file(path)
    assert not isinstance(e.value, ValueError)


TORCH_LEAF = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


def test_wrong_dtypes_and_shapes_are_listed_together():
    abstract = {
        "conv": {"kernel": np.zeros((3, 3, 2, 4), np.float32), "bias": np.zeros(4, np.float32)},
        "norm": {"scale": np.zeros(4, np.float32)},
        "embed": {"embedding": np.zeros((5, 4), np.float32)},
    }
    tensors = {
        "conv.weight": np.zeros((4, 2, 3, 3), np.float64),  # float64
        "conv.bias": np.zeros(4, np.int64),  # int64
        "norm.weight": np.zeros(5, np.float32),  # mis-shaped
        "embed.weight": np.zeros((5, 4), np.float16),  # fine: float16 is a released dtype
    }
    with pytest.raises(WeightMismatchError) as e:
        assemble(abstract, tensors, lambda p: f"{p[0]}.{TORCH_LEAF.get(p[1], p[1])}")
    text = str(e.value)
    assert "conv.weight (for conv/kernel) is float64, expected float32, float16 or bfloat16" in text
    assert "conv.bias (for conv/bias) is int64, expected float32, float16 or bfloat16" in text
    assert (
        "'norm.weight' has shape (5,), which does not fit the model's parameter of shape (4,)"
        in text
    )
    assert "embed" not in text


def test_released_dtypes_are_accepted_and_converted():
    abstract = {"d": {"kernel": np.zeros((2, 3), np.float32)}}
    for dtype in (np.float32, np.float16, ml_dtypes.bfloat16):
        w = np.arange(6).reshape(3, 2).astype(dtype)
        got = assemble(abstract, {"d.weight": w}, lambda p: "d.weight")
        assert got["d"]["kernel"].dtype == np.float32
        np.testing.assert_array_equal(got["d"]["kernel"], w.T.astype(np.float32))


@pytest.fixture()
def vae_folder(tmp_path):
    ref.make_vae("kl_f4").save_pretrained(tmp_path / "vae")
    return tmp_path / "vae"


def test_diffusers_folder_with_wrong_dtypes_fails_convert_in_one_line(vae_folder, tmp_path, capsys):
    weights = vae_folder / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights))
    first, second = sorted(tensors)[:2]
    tensors[first] = tensors[first].astype(np.float64)
    tensors[second] = tensors[second].astype(np.int64)
    save_file(tensors, str(weights))
    with pytest.raises(WeightMismatchError, match="wrong dtype") as e:
        interop_diffusers.load_diffusers_autoencoder(str(vae_folder))
    assert f"{first} (for " in str(e.value) and "is float64" in str(e.value)
    assert f"{second} (for " in str(e.value) and "is int64" in str(e.value)
    out = tmp_path / "wd"
    with pytest.raises(SystemExit) as exit_:
        convert.main(["diffusers", "--vae", str(vae_folder), "--out", str(out)])
    message = str(exit_.value.code)
    assert message.startswith("python -m ldm_jax.convert: error: The diffusers")
    assert "\n" not in message and "float64" in message and "int64" in message
    assert not out.exists()


def test_diffusers_folder_with_a_truncated_file_fails_convert_in_one_line(vae_folder, tmp_path):
    weights = vae_folder / "diffusion_pytorch_model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SystemExit) as exit_:
        convert.main(["diffusers", "--vae", str(vae_folder), "--out", str(tmp_path / "wd")])
    message = str(exit_.value.code)
    assert message.startswith(f"python -m ldm_jax.convert: error: {weights}: not a valid")
    assert "the file is truncated" in message and "\n" not in message
