"""Orbax checkpointing of a `TrainState` plus JSON metadata (data iterator state, scale)."""

from __future__ import annotations

import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp


class MissingCheckpointError(FileNotFoundError):
    """No checkpoint where one was required."""


class Checkpointer:
    """Keeps the last `max_to_keep` checkpoints of one training stage under `directory`.

    Each checkpoint holds `state` (a pytree, restored with the structure and shardings of an
    abstract target) and `meta` (a JSON dict). Orbax writes to a temporary folder and renames it
    when complete, so an interrupted save never replaces the previous checkpoint.

    A process killed mid-save leaves that temporary folder behind; orbax removes it only when the
    same step is saved again, which a resumed run may never do (e.g. after a preemption save at
    an odd step). The first `save` of a `Checkpointer` therefore deletes such leftovers. Reading
    (constructing, `latest_step`, `restore`) never deletes anything, so inspecting the workdir of
    a running trainer cannot remove the folder that trainer is writing.
    """

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            # Synchronous saves: the loop waits for each checkpoint anyway, and an asynchronous
            # manager counts that wait as "waiting for the previous save" and warns about it
            # in the middle of the progress bar when it exceeds a second.
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
            ),
            item_names=("state", "meta"),
        )
        self._swept = False

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Saves synchronously (returns once the checkpoint is complete on disk)."""
        if not self._swept:
            self._remove_unfinished_saves()
            self._swept = True
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def _remove_unfinished_saves(self) -> None:
        """Deletes temporary folders left by an earlier process killed while saving (process 0).

        Runs before this process's first save, so none of them can be one this process is writing.
        """
        if jax.process_index() != 0:
            return
        for name in os.listdir(self.directory):
            if ocp.path.step.TMP_DIR_SUFFIX in name:
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restores `(state, meta)` from `step` (default: the latest).

        Args:
          abstract_state: pytree of `jax.ShapeDtypeStruct` (e.g. from `jax.eval_shape`) with the
            structure to restore into.
          step: which checkpoint; None for the latest.

        Raises:
          MissingCheckpointError: when there is no checkpoint, naming the folder and the fix.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise MissingCheckpointError(
                f"No checkpoint in {self.directory}. Train first: "
                "python -m ldm_jax.train --config configs/quickstart.py --workdir <WORKDIR>"
            )
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            abstract_state,
        )
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
            ),
        )
        return restored.state, dict(restored.meta)

    def close(self) -> None:
        self._manager.close()
