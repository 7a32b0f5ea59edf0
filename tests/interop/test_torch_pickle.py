"""The restricted unpickler: tensors come back exactly; no code from the file ever runs."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ldm_jax.interop.torch_pickle import UnsafeCheckpointError, load_state_dict, load_torch_file
from tests.interop.reference import torch


class Payload:
    """Unpickling this with the standard pickle would create a file."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_tensors_round_trip_exactly(tmp_path):
    sd = {
        "f32": torch.randn(3, 4),
        "transposed": torch.randn(4, 3).t(),
        "slice": torch.arange(20.0)[5:11],
        "bf16": torch.randn(5).bfloat16(),
        "f16": torch.randn(2, 2).half(),
        "i64": torch.tensor(7),
        "bool": torch.tensor([True, False]),
        "param": torch.nn.Parameter(torch.ones(2)),
    }
    path = str(tmp_path / "sd.ckpt")
    torch.save({"state_dict": sd, "global_step": 3}, path)
    got = load_state_dict(path)
    for k, v in sd.items():
        want = v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
        assert got[k].shape == tuple(v.shape), k
        np.testing.assert_array_equal(np.asarray(got[k], want.dtype), want)
    assert load_torch_file(path)["global_step"] == 3


def test_refuses_other_globals_without_running_them(tmp_path):
    marker = tmp_path / "pwned"
    path = str(tmp_path / "evil.ckpt")
    torch.save({"state_dict": {"w": torch.ones(1)}, "x": Payload(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match="open"):
        load_state_dict(path)
    assert not marker.exists()
    # Placeholders keep the tensors readable and still call nothing.
    sd = load_state_dict(path, allow_placeholders=True)
    np.testing.assert_array_equal(sd["w"], np.ones(1, np.float32))
    assert not marker.exists()


def test_reads_pre_zip_files(tmp_path):
    """torch.save's pre-1.6 format: the same tensors (dtypes, shared storages) as torch.load."""
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    saved = {"w": base, "view": base[1:], "h": torch.ones(2, dtype=torch.float16), "n": 3}
    path = tmp_path / "legacy.pt"
    torch.save(saved, path, _use_new_zipfile_serialization=False)
    sd = load_state_dict(str(path))
    assert set(sd) == {"w", "view", "h"}
    for k in sd:
        np.testing.assert_array_equal(sd[k], saved[k].numpy())
        assert sd[k].dtype == saved[k].numpy().dtype


def test_rejects_malicious_pre_zip_files(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "legacy_evil.pt"
    torch.save({"w": torch.ones(1), "x": Evil()}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_state_dict(str(path))
    assert not marker.exists()


def test_rejects_other_files(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="neither a zip-format nor a pre-1.6"):
        load_state_dict(str(path))
    assert path.read_bytes() == b"not a checkpoint at all"
