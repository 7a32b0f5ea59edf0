"""Exact resume after SIGKILL: mid-step in either stage, and in the middle of a checkpoint write.

Each test runs the train CLI on the tiny config (8 steps per stage, a checkpoint every 3 steps, so
checkpoints 3, 6 and the final 8) through `kill_launcher.py`, which plants a SIGKILL at a chosen
point; it then reruns the same command on the same workdir until it finishes and compares every
array of the final checkpoint (params, optimizer state, EMA, step, RNG) bit for bit, and its
metadata (data iterator state, latent scale), with one uninterrupted run shared by the module.
Checkpoints are compared as orbax stores them (restored without a target), so the tests do not
depend on how the trainers build their state.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ldm_jax.trainers import autoencoder as train_autoencoder
from ldm_jax.trainers import ldm as train_ldm
from ldm_jax.training.checkpoint import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "quickstart.py")
LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kill_launcher.py")
STEPS, EVERY = 8, 3  # checkpoints at steps 3, 6 and 8 in each stage
TMP = ocp.path.step.TMP_DIR_SUFFIX  # orbax's temporary-folder suffix


def _flags(workdir: str, tfds_dir: str, *extra: str) -> list[str]:
    flags = [
        f"--config={CONFIG}:tiny",
        f"--workdir={workdir}",
        f"--config.data.data_dir={tfds_dir}",
    ]
    for section in ("autoencoder_train", "train"):
        flags += [
            f"--config.{section}.steps={STEPS}",
            f"--config.{section}.checkpoint_every={EVERY}",
            f"--config.{section}.log_every=1",  # the launcher's step hooks need every step logged
            f"--config.{section}.batch_size=8",  # one example per fake CPU device (conftest)
        ]
    return flags + list(extra)


def _train(
    workdir: str, tfds_dir: str, *extra: str, kill_at: str = "", cli: list[str] | None = None
):
    """Runs one training process (through the launcher unless `cli` is given); returns it."""
    env = {**os.environ, "TFDS_DATA_DIR": tfds_dir, "LDM_JAX_KILL_AT": kill_at}
    return subprocess.run(
        (cli or [sys.executable, LAUNCHER]) + _flags(workdir, tfds_dir, *extra),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _tail(proc: subprocess.CompletedProcess) -> str:
    return f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


def _assert_killed(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == -signal.SIGKILL, "the kill point was never reached:\n" + _tail(proc)


def _assert_finished(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, _tail(proc)


def _ckpt_dir(workdir: str, stage: str) -> str:
    return os.path.join(workdir, "checkpoints", stage)


def _leftovers(workdir: str, stage: str) -> list[str]:
    """Names of unfinished (temporary) checkpoint folders of a stage."""
    return sorted(n for n in os.listdir(_ckpt_dir(workdir, stage)) if TMP in n)


def _latest(workdir: str, stage: str) -> int | None:
    """The latest step as the library reports it."""
    ckpt = Checkpointer(_ckpt_dir(workdir, stage))
    try:
        return ckpt.latest_step()
    finally:
        ckpt.close()


def _read(workdir: str, stage: str, step: int) -> tuple[dict, dict]:
    """(state as numpy arrays, meta) of one checkpoint, exactly as orbax stored them."""
    manager = ocp.CheckpointManager(
        _ckpt_dir(workdir, stage),
        options=ocp.CheckpointManagerOptions(read_only=True),
        item_names=("state", "meta"),
    )
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
        )
    finally:
        manager.close()
    return jax.tree.map(np.asarray, restored.state), dict(restored.meta)


def _assert_bitwise_equal(got, want, what: str) -> None:
    got_leaves, got_tree = jax.tree_util.tree_flatten_with_path(got)
    want_leaves, want_tree = jax.tree_util.tree_flatten_with_path(want)
    assert got_tree == want_tree, f"{what}: different tree structure"
    for (path, x), (_, y) in zip(got_leaves, want_leaves, strict=True):
        name = f"{what}{jax.tree_util.keystr(path)}"
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), f"{name} differs (max |diff| {np.max(np.abs(x - y))})"


def _assert_leaves_bitwise_equal(library_tree, stored_tree, what: str) -> None:
    """A tree the library restored against the stored one, leaf by leaf (the library may wrap
    arrays, e.g. in partitioning boxes, that orbax stores as plain dicts)."""
    got = [np.asarray(x) for x in jax.tree.leaves(library_tree)]
    want = jax.tree.leaves(stored_tree)
    assert len(got) == len(want), f"{what}: {len(got)} arrays, stored {len(want)}"
    for i, (x, y) in enumerate(zip(got, want, strict=True)):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), f"{what}: array {i} differs"


def _assert_same_checkpoint(workdir: str, reference: str, stage: str, step: int) -> None:
    state, meta = _read(workdir, stage, step)
    want_state, want_meta = _read(reference, stage, step)
    assert int(state["step"]) == step
    assert "params" in state and "opt_state" in state and "rng" in state
    if stage == "ldm":
        assert jax.tree.leaves(state["ema_params"]), "the LDM checkpoint has no EMA weights"
    _assert_bitwise_equal(state, want_state, f"{stage} step {step} state")
    assert meta == want_meta  # data iterator position (and the LDM's latent scale)


def _tiny_config(tfds_dir: str):
    from tests.config.test_validation import quickstart_config

    config = quickstart_config("tiny")
    config.data.data_dir = tfds_dir
    return config


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tfds_dir: str) -> str:
    """Workdir of one uninterrupted run of both stages through the plain CLI (all checkpoints
    kept, so intermediate ones can be compared too)."""
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    proc = _train(
        workdir,
        tfds_dir,
        "--config.autoencoder_train.keep_checkpoints=10",
        "--config.train.keep_checkpoints=10",
        cli=[sys.executable, "-m", "ldm_jax.train"],
    )
    _assert_finished(proc)
    for stage in ("autoencoder", "ldm"):
        assert _latest(workdir, stage) == STEPS
    return workdir


@pytest.mark.slow
def test_sigkill_mid_step_in_autoencoder_training_resumes_bitwise(reference, tmp_path, tfds_dir):
    """Killed between checkpoints 3 and 6, then after the last periodic checkpoint (6)."""
    workdir = str(tmp_path / "run")
    stage_only = "--config.stage=autoencoder"

    _assert_killed(_train(workdir, tfds_dir, stage_only, kill_at="autoencoder:step:4"))
    assert _latest(workdir, "autoencoder") == 3  # step 4 was computed, never saved
    assert _leftovers(workdir, "autoencoder") == []

    proc = _train(workdir, tfds_dir, stage_only, kill_at="autoencoder:step:7")
    _assert_killed(proc)
    assert proc.stderr.count("autoencoder: resuming from step 3") == 1  # once, on stderr
    assert _latest(workdir, "autoencoder") == 6  # steps 7 and up are lost: the rerun redoes them

    proc = _train(workdir, tfds_dir, stage_only)
    _assert_finished(proc)
    assert proc.stderr.count("autoencoder: resuming from step 6") == 1  # once, on stderr
    assert _leftovers(workdir, "autoencoder") == []
    _assert_same_checkpoint(workdir, reference, "autoencoder", STEPS)


@pytest.mark.slow
def test_sigkill_mid_step_in_ldm_training_resumes_bitwise(reference, tmp_path, tfds_dir):
    """Killed between checkpoints 3 and 6 (EMA, latent scale and data position must resume)."""
    workdir = str(tmp_path / "run")
    # Stage 1 is done (the reference's checkpoints): the same `both` command skips it.
    shutil.copytree(_ckpt_dir(reference, "autoencoder"), _ckpt_dir(workdir, "autoencoder"))

    _assert_killed(_train(workdir, tfds_dir, kill_at="ldm:step:4"))
    assert _latest(workdir, "ldm") == 3
    assert _leftovers(workdir, "ldm") == []

    proc = _train(workdir, tfds_dir)
    _assert_finished(proc)
    assert proc.stderr.count("ldm: resuming from step 3") == 1  # once, on stderr
    _assert_same_checkpoint(workdir, reference, "ldm", STEPS)


@pytest.mark.slow
def test_sigkill_during_checkpoint_write_keeps_the_previous_one(reference, tmp_path, tfds_dir):
    """Killed while writing checkpoint 3 (none before it), 6, and a preemption save at step 7."""
    workdir = str(tmp_path / "run")
    stage_only = "--config.stage=autoencoder"

    # The very first save dies: nothing counts as saved, the rerun starts from scratch.
    _assert_killed(_train(workdir, tfds_dir, stage_only, kill_at="autoencoder:write:3"))
    assert _leftovers(workdir, "autoencoder") == [f"3{TMP}"]
    assert os.listdir(os.path.join(_ckpt_dir(workdir, "autoencoder"), f"3{TMP}", "state"))
    assert _latest(workdir, "autoencoder") is None

    proc = _train(workdir, tfds_dir, stage_only, kill_at="autoencoder:write:6")
    _assert_killed(proc)
    assert "resuming" not in proc.stdout + proc.stderr
    assert _leftovers(workdir, "autoencoder") == [f"6{TMP}"]  # written, never committed
    assert _latest(workdir, "autoencoder") == 3  # the half-written 6 is not reported
    _assert_same_checkpoint(workdir, reference, "autoencoder", 3)  # readable and intact
    config = _tiny_config(tfds_dir)
    _assert_leaves_bitwise_equal(
        train_autoencoder.restore_params(workdir, config),
        _read(reference, "autoencoder", 3)[0]["params"],
        "library restore of step 3",
    )

    # Preemption: SIGTERM after step 7, and SIGKILL (grace period over) during that save.
    proc = _train(workdir, tfds_dir, stage_only, kill_at="autoencoder:term:7,autoencoder:write:7")
    _assert_killed(proc)
    assert proc.stderr.count("autoencoder: resuming from step 3") == 1  # once, on stderr
    assert _latest(workdir, "autoencoder") == 6
    assert _leftovers(workdir, "autoencoder") == [f"7{TMP}"]

    proc = _train(workdir, tfds_dir, stage_only)
    _assert_finished(proc)
    assert proc.stderr.count("autoencoder: resuming from step 6") == 1  # once, on stderr
    # Step 7 is never saved again, so only the Checkpointer's sweep removes its folder.
    assert _leftovers(workdir, "autoencoder") == []
    _assert_same_checkpoint(workdir, reference, "autoencoder", STEPS)


def test_first_save_removes_unfinished_saves_and_readers_never_do(tmp_path):
    directory = str(tmp_path / "ckpt")
    os.makedirs(os.path.join(directory, f"7{TMP}", "state"))  # as a killed save leaves it
    reader = Checkpointer(directory)
    assert reader.latest_step() is None
    reader.close()
    assert os.path.isdir(os.path.join(directory, f"7{TMP}"))  # readers delete nothing

    writer = Checkpointer(directory)
    writer.save(1, {"x": jnp.arange(3.0)}, {"data": 1})
    assert sorted(os.listdir(directory)) == ["1"]
    state, meta = writer.restore({"x": jax.ShapeDtypeStruct((3,), jnp.float32)})
    writer.close()
    np.testing.assert_array_equal(state["x"], [0.0, 1.0, 2.0])
    assert meta == {"data": 1}


@pytest.mark.slow
def test_ldm_library_restore_reads_the_same_final_state(reference, tfds_dir):
    """The trainer's own restore path reads the reference run's final LDM checkpoint."""
    state, meta = train_ldm.restore(reference, _tiny_config(tfds_dir))
    raw, raw_meta = _read(reference, "ldm", STEPS)
    assert int(state.step) == STEPS and meta == raw_meta
    _assert_leaves_bitwise_equal(state.params, raw["params"], "params")
    _assert_leaves_bitwise_equal(state.ema_params, raw["ema_params"], "ema")
