"""Damaged, partial and incompatible checkpoints, and saves that fail for lack of space.

Each damage is done to a real orbax checkpoint on disk (truncated or overwritten tensor data,
deleted metadata, a missing item, zeroed files); restoring the latest must fall back to the
previous checkpoint with a warning and keep the damaged folder. A save that hits the file-size
limit (RLIMIT_FSIZE: the kernel refuses the write, as on a full disk) must leave the earlier
checkpoints readable and report the OS error.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ldm_jax.training.checkpoint import (
    Checkpointer,
    CheckpointSaveError,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
)
from ldm_jax.training.state import create_state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _state(width: int = 4, scale: float = 1.0):
    params = {"dense": {"kernel": jnp.full((3, width), scale), "bias": jnp.zeros((width,))}}
    return create_state(params, optax.adam(1e-3), jax.random.PRNGKey(0), use_ema=True)


def _abstract(width: int = 4):
    return jax.eval_shape(lambda: _state(width))


def _three_checkpoints(directory: str) -> Checkpointer:
    """Steps 1, 2, 3 whose kernels are filled with the step number."""
    ckpt = Checkpointer(directory, max_to_keep=3)
    for step in (1, 2, 3):
        ckpt.save(step, _state(scale=float(step)), {"pos": step})
    return ckpt


def _data_files(step_dir: str) -> list[str]:
    """The tensorstore data files of a checkpoint's state (the arrays' bytes)."""
    return glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)


def _truncate(step_dir):
    for path in _data_files(step_dir):
        with open(path, "r+b") as f:
            f.truncate(16)


def _overwrite(step_dir):
    for path in _data_files(step_dir):
        with open(path, "r+b") as f:
            f.write(b"\xff" * os.path.getsize(path))


def _remove(relative):
    def damage(step_dir):
        path = os.path.join(step_dir, relative)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

    return damage


def _garbage_meta(step_dir):
    with open(os.path.join(step_dir, "meta", "metadata"), "w") as f:
        f.write("{not json")


def _empty_step(step_dir):
    for path in glob.glob(os.path.join(step_dir, "*")):
        if not path.endswith("_CHECKPOINT_METADATA"):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _zero_every_file(step_dir):
    for path in glob.glob(os.path.join(step_dir, "**"), recursive=True):
        if os.path.isfile(path):
            open(path, "w").close()


DAMAGES = {
    "truncated_tensor_data": _truncate,
    "overwritten_tensor_data": _overwrite,
    "missing_array_metadata": _remove("state/_METADATA"),
    "missing_state_item": _remove("state"),
    "missing_meta_item": _remove("meta"),
    "garbage_meta_json": _garbage_meta,
    "missing_ocdbt_manifest": _remove("state/manifest.ocdbt"),
    "only_checkpoint_metadata_left": _empty_step,
    "every_file_zero_bytes": _zero_every_file,
}


@pytest.mark.parametrize("damage", list(DAMAGES), ids=list(DAMAGES))
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage):
    directory = str(tmp_path / "ckpt")
    _three_checkpoints(directory)
    DAMAGES[damage](os.path.join(directory, "3"))
    ckpt = Checkpointer(directory, max_to_keep=3)
    with caplog.at_level(logging.WARNING):
        step, state, meta = ckpt.restore_latest(_abstract())
    assert step == 2 and meta == {"pos": 2}
    np.testing.assert_array_equal(state.params["dense"]["kernel"], np.full((3, 4), 2.0))
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "Checkpoint step 3" in warned and "cannot be read" in warned, warned
    # Nothing is deleted: the damaged folder is set aside, and no longer counts as the latest.
    assert sorted(os.listdir(directory)) == ["1", "2", "corrupt-3"]
    assert ckpt.latest_step() == 2
    # Training goes on from step 2 and saves step 3 again beside the kept damaged copy.
    ckpt.save(3, _state(scale=30.0), {"pos": 30})
    state, meta = Checkpointer(directory).restore(_abstract())
    assert meta == {"pos": 30}
    assert sorted(os.listdir(directory)) == ["1", "2", "3", "corrupt-3"]


def test_every_checkpoint_damaged_is_one_clear_error_that_keeps_them(tmp_path):
    directory = str(tmp_path / "ckpt")
    _three_checkpoints(directory)
    for step in (1, 2, 3):
        _truncate(os.path.join(directory, str(step)))
    with pytest.raises(CorruptCheckpointError, match=r"No checkpoint in .*ckpt could be read"):
        Checkpointer(directory).restore(_abstract())
    assert sorted(os.listdir(directory)) == ["corrupt-1", "corrupt-2", "corrupt-3"]


def test_an_explicit_damaged_step_is_not_replaced_by_another(tmp_path):
    directory = str(tmp_path / "ckpt")
    _three_checkpoints(directory)
    _truncate(os.path.join(directory, "2"))
    with pytest.raises(CorruptCheckpointError, match="Checkpoint step 2 .* cannot be read"):
        Checkpointer(directory).restore(_abstract(), step=2)


def test_checkpoint_of_another_config_lists_the_mismatched_shapes(tmp_path):
    directory = str(tmp_path / "ckpt")
    _three_checkpoints(directory)
    with pytest.raises(IncompatibleCheckpointError) as error:
        Checkpointer(directory).restore(_abstract(width=8))
    message = str(error.value)
    assert "step 3" in message and "different model config" in message
    assert "params/dense/kernel: checkpoint (3, 4), config (3, 8)" in message
    assert "params/dense/bias: checkpoint (4,), config (8,)" in message
    assert "new --workdir" in message
    # Not mistaken for damage: nothing was set aside.
    assert sorted(os.listdir(directory)) == ["1", "2", "3"]


def test_checkpoint_with_a_missing_tensor_names_it(tmp_path):
    directory = str(tmp_path / "ckpt")
    Checkpointer(directory).save(1, {"a": jnp.ones(3)}, {})
    target = {"a": jax.ShapeDtypeStruct((3,), jnp.float32), "b": jax.ShapeDtypeStruct((2,), "f4")}
    with pytest.raises(IncompatibleCheckpointError, match="b: not in the checkpoint"):
        Checkpointer(directory).restore(target)


_FULL_DISK_SCRIPT = textwrap.dedent(
    """
    import json, os, resource, signal, sys, time
    import jax.numpy as jnp
    from ldm_jax.training.checkpoint import Checkpointer, CheckpointSaveError

    directory = sys.argv[1]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write returns EFBIG instead
    # About 400 kB on disk, and 40 small tensors: many writes are under way when one fails.
    state = {"w": jnp.arange(100_000, dtype=jnp.float32)}
    extra = {f"b{i}": jnp.full((256,), float(i)) for i in range(40)}
    ckpt = Checkpointer(directory, max_to_keep=2)
    ckpt.save(1, {**state, **extra}, {"pos": 1})
    ckpt.save(2, {"w": state["w"] * 2, **extra}, {"pos": 2})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))  # no file may exceed 20 kB
    try:
        ckpt.save(3, {"w": state["w"] * 3, **extra}, {"pos": 3})
        result = {"error": None}
    except CheckpointSaveError as e:
        result = {"error": str(e)}
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    result["after_failure"] = sorted(os.listdir(directory))
    time.sleep(1)  # the abandoned writes finish (and used to print tracebacks) meanwhile
    print(json.dumps(result))
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE / SIGXFSZ semantics are Linux")
def test_failed_save_keeps_earlier_checkpoints_and_the_run_can_resume(tmp_path):
    directory = str(tmp_path / "ckpt")
    proc = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_SCRIPT, directory],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["error"] is not None, "the save beyond the size limit did not fail"
    assert "Could not write checkpoint step 3" in result["error"]
    assert "File too large" in result["error"]
    assert "steps: 1, 2" in result["error"] and "run the same command again" in result["error"]
    # The writes orbax abandoned print no `Event loop is closed` tracebacks when they finish.
    assert "Event loop is closed" not in proc.stderr, proc.stderr[-3000:]
    # No half-written folder is left, and both earlier checkpoints are intact.
    assert result["after_failure"] == ["1", "2"]
    target = {"w": jax.ShapeDtypeStruct((100_000,), jnp.float32)}
    target.update({f"b{i}": jax.ShapeDtypeStruct((256,), jnp.float32) for i in range(40)})
    ckpt = Checkpointer(directory, max_to_keep=2)
    state, meta = ckpt.restore(target)
    assert meta == {"pos": 2}
    np.testing.assert_array_equal(state["w"], 2 * np.arange(100_000, dtype=np.float32))
    np.testing.assert_array_equal(state["b39"], np.full((256,), 39.0, np.float32))
    state, meta = ckpt.restore(target, step=1)
    assert meta == {"pos": 1}
    # Space is back: the same step saves.
    ckpt.save(
        3, {"w": jnp.ones(100_000), **{k: v for k, v in state.items() if k != "w"}}, {"pos": 3}
    )
    assert ckpt.all_steps() == [2, 3]


def test_failing_writer_is_reported_with_the_os_error(tmp_path, monkeypatch):
    directory = str(tmp_path / "ckpt")
    ckpt = Checkpointer(directory, max_to_keep=2)
    ckpt.save(1, {"w": jnp.ones(3)}, {"pos": 1})

    def no_space(*args, **kwargs):
        raise ValueError("OUT_OF_RANGE: Failed to write 12 bytes [os_error_code='28']")

    monkeypatch.setattr(ckpt._manager, "save", no_space)
    with pytest.raises(CheckpointSaveError, match=r"No space left on device.*steps: 1\)"):
        ckpt.save(2, {"w": jnp.ones(3)}, {"pos": 2})
    assert Checkpointer(directory).all_steps() == [1]


def test_failed_save_removes_the_folder_its_late_writers_still_fill(tmp_path, monkeypatch):
    """Tensorstore writes already queued can land after the save raised; none may survive."""
    directory = str(tmp_path / "ckpt")
    ckpt = Checkpointer(directory, max_to_keep=2)
    ckpt.save(1, {"w": jnp.ones(3)}, {"pos": 1})
    unfinished = os.path.join(directory, "2.orbax-checkpoint-tmp", "state", "d")
    writer_done = threading.Event()

    def late_writer():
        deadline = time.monotonic() + 0.8
        index = 0
        while time.monotonic() < deadline:
            try:
                os.makedirs(unfinished, exist_ok=True)
                with open(os.path.join(unfinished, f"chunk{index}"), "wb") as f:
                    f.write(b"x" * 64)
            except OSError:  # the folder was removed under it
                pass
            index += 1
            time.sleep(0.01)
        writer_done.set()

    def save_that_fails_early(*args, **kwargs):
        threading.Thread(target=late_writer, daemon=True).start()
        time.sleep(0.05)
        raise ValueError("OUT_OF_RANGE: Failed to write 12 bytes [os_error_code='27']")

    monkeypatch.setattr(ckpt._manager, "save", save_that_fails_early)
    with pytest.raises(CheckpointSaveError, match=r"File too large.*steps: 1\)"):
        ckpt.save(2, {"w": jnp.ones(3)}, {"pos": 2})
    assert writer_done.wait(timeout=5)
    assert sorted(os.listdir(directory)) == ["1"]


def test_abandoned_write_callbacks_are_dropped_other_unraisables_are_not(tmp_path, monkeypatch):
    """After a failed save, only `Event loop is closed` is dropped; a successful save restores."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
    recorder = sys.unraisablehook
    ckpt = Checkpointer(str(tmp_path / "ckpt"), max_to_keep=2)
    ckpt.save(1, {"w": jnp.ones(3)}, {"pos": 1})
    assert sys.unraisablehook is recorder  # a successful save leaves the hook as it found it

    def fails(*args, **kwargs):
        raise ValueError("OUT_OF_RANGE: Failed to write 12 bytes [os_error_code='28']")

    with monkeypatch.context() as patch:
        patch.setattr(ckpt._manager, "save", fails)
        with pytest.raises(CheckpointSaveError):
            ckpt.save(2, {"w": jnp.ones(3)}, {"pos": 2})
    assert sys.unraisablehook is not recorder
    late = RuntimeError("Event loop is closed")
    other = RuntimeError("something else")
    for error in (late, other, ValueError("Event loop is closed")):
        sys.unraisablehook(types.SimpleNamespace(exc_value=error))
    assert [str(e) for e in seen] == ["something else", "Event loop is closed"]
    assert isinstance(seen[1], ValueError)
