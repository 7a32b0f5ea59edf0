"""reader.restore_state / load_trained_ldm at an earlier kept step, and the error for a step
that was not kept."""

from __future__ import annotations

import numpy as np
import orbax.checkpoint as ocp
import pytest

from ldm_jax.workdir.reader import MissingCheckpointError, restore_state


def _write(directory, steps):
    manager = ocp.CheckpointManager(str(directory), item_names=("state", "meta"))
    for step in steps:
        state = {"params": {"w": np.full((2,), float(step), np.float32)}, "step": step}
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({"at": step})
            ),
        )
    manager.wait_until_finished()
    manager.close()


def test_restores_the_latest_or_a_kept_step(tmp_path):
    _write(tmp_path / "ldm", [10, 20, 30])
    state, meta, step = restore_state(str(tmp_path / "ldm"))
    assert step == 30 and meta == {"at": 30}
    np.testing.assert_array_equal(state["params"]["w"], [30.0, 30.0])
    state, meta, step = restore_state(str(tmp_path / "ldm"), 20)
    assert step == 20 and meta == {"at": 20}
    np.testing.assert_array_equal(state["params"]["w"], [20.0, 20.0])


def test_a_step_not_kept_names_the_kept_ones(tmp_path):
    _write(tmp_path / "ldm", [10, 20])
    with pytest.raises(MissingCheckpointError, match=r"step 15 .*kept steps: \[10, 20\]"):
        restore_state(str(tmp_path / "ldm"), 15)
    with pytest.raises(MissingCheckpointError, match="No checkpoint in"):
        restore_state(str(tmp_path / "nothing"), 15)
