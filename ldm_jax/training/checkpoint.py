"""Orbax checkpointing of a `TrainState` plus JSON metadata (data iterator state, scale).

Restoring the latest checkpoint falls back to the previous one when the latest cannot be read
(a damaged or partly deleted folder), with a warning; the unreadable folder is kept, renamed
`corrupt-<step>`, so nothing is deleted and later saves do not mix with it. A checkpoint written
by a different model config is not damaged: restoring it raises `IncompatibleCheckpointError`
listing the tensors whose shapes differ. A save that fails (a full disk) leaves no temporary
folder behind, and the reads or writes orbax abandons after a failure print no tracebacks.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from ldm_jax.training import logging as log

CORRUPT_PREFIX = "corrupt-"  # unreadable checkpoints are renamed corrupt-<step>
_MAX_LISTED = 8  # mismatched tensors named in an IncompatibleCheckpointError
_SETTLE_S = 0.25  # a failed save's folder must stay absent this long to count as removed
_REMOVE_TIMEOUT_S = 30.0


class MissingCheckpointError(FileNotFoundError):
    """No checkpoint where one was required."""


class CorruptCheckpointError(RuntimeError):
    """No checkpoint of a folder could be read; the message names the folder and each error."""


class IncompatibleCheckpointError(ValueError):
    """A checkpoint's tensors do not have the shapes the config's model needs."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written (a full disk, a quota); the earlier ones are intact."""


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

    def all_steps(self) -> list[int]:
        """The steps of the checkpoints in the folder, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Saves synchronously (returns once the checkpoint is complete on disk)."""
        if not self._swept:
            self._remove_unfinished_saves()
            self._swept = True
        try:
            with abandoned_io_callbacks_silenced():
                self._manager.save(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                    ),
                    force=True,
                )
        except Exception as e:  # tensorstore reports a full disk as ValueError (OUT_OF_RANGE)
            try:  # let orbax's writer threads stop before removing their folder
                self._manager.wait_until_finished()
            except Exception:  # the same failure, reported again
                pass
            # Writes already queued in tensorstore's own threads can still land in the
            # temporary folder after the save raised: remove it until it stays gone.
            self._remove_unfinished_saves(settle_s=_SETTLE_S)
            kept = ", ".join(map(str, self.all_steps())) or "none"
            raise CheckpointSaveError(
                f"Could not write checkpoint step {step} to {self.directory} "
                f"({_short_reason(e)}). The earlier checkpoints (steps: {kept}) are intact. Free "
                "disk space (or fix the folder's permissions or quota) and run the same command "
                "again to resume from the latest of them."
            ) from e

    def _remove_unfinished_saves(self, settle_s: float = 0.0) -> None:
        """Deletes the temporary folders of unfinished saves (process 0).

        Runs before this process's first save (leftovers of an earlier process killed while
        saving; none can be one this process is writing) and after a failed save.

        Args:
          settle_s: after a failed save, how long a removed folder must stay absent before it
            counts as gone; writer threads still finishing can recreate files in it meanwhile.
        """
        if jax.process_index() != 0:
            return
        for name in os.listdir(self.directory):
            if ocp.path.step.TMP_DIR_SUFFIX in name:
                _remove_folder(os.path.join(self.directory, name), settle_s)

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restores `(state, meta)` from `step`, or from the latest readable checkpoint.

        Args:
          abstract_state: pytree of `jax.ShapeDtypeStruct` (e.g. from `jax.eval_shape`) with the
            structure to restore into.
          step: which checkpoint; None for the latest one that can be read (`restore_latest`).

        Raises:
          MissingCheckpointError: when there is no checkpoint, naming the folder and the fix.
          IncompatibleCheckpointError: listing the tensors whose shapes differ from the target.
          CorruptCheckpointError: when the checkpoint (with `step=None`: every checkpoint)
            cannot be read.
        """
        if step is None:
            return self.restore_latest(abstract_state)[1:]
        return self._restore_step(abstract_state, step)

    def restore_latest(
        self, abstract_state: Any, newest: int | None = None
    ) -> tuple[int, Any, dict[str, Any]]:
        """`(step, state, meta)` of the newest readable checkpoint at or before `newest`.

        A checkpoint that cannot be read is skipped with a warning and renamed
        `corrupt-<step>` (by process 0), then the previous one is tried.

        Raises:
          MissingCheckpointError, IncompatibleCheckpointError, CorruptCheckpointError: as
            `restore`.
        """
        steps = [s for s in reversed(self.all_steps()) if newest is None or s <= newest]
        if not steps:
            raise MissingCheckpointError(
                f"No checkpoint in {self.directory}. Train first: "
                "python -m ldm_jax.train --config configs/quickstart.py --workdir <WORKDIR>"
            )
        errors = []
        for step in steps:
            try:
                state, meta = self._restore_step(abstract_state, step)
            except CorruptCheckpointError as e:
                errors.append(str(e))
                kept = self._quarantine(step)
                log.warning("%s; kept it as %s and trying the previous checkpoint", e, kept or "is")
                continue
            if errors:
                log.warning("restored step %d from %s instead", step, self.directory)
            return step, state, meta
        raise CorruptCheckpointError(
            f"No checkpoint in {self.directory} could be read ({'; '.join(errors)}). They are "
            f"kept as {CORRUPT_PREFIX}<step> folders; restore a backup into the folder, or "
            "train in a new --workdir."
        )

    def _restore_step(self, abstract_state: Any, step: int) -> tuple[Any, dict[str, Any]]:
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            abstract_state,
        )
        try:
            with abandoned_io_callbacks_silenced():
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
                    ),
                )
        except Exception as e:  # orbax and tensorstore raise bare Exception, OSError, ValueError
            mismatched = self._mismatched_shapes(target, step)
            if mismatched:
                raise IncompatibleCheckpointError(
                    f"The checkpoint of step {step} in {self.directory} was written by a "
                    f"different model config: {'; '.join(mismatched)}. Train this config in a "
                    "new --workdir, or run with the config this workdir was trained with "
                    "(its config.json)."
                ) from None
            raise CorruptCheckpointError(
                f"Checkpoint step {step} in {self.directory} cannot be read ({_short_reason(e)})"
            ) from e
        if not isinstance(restored.meta, dict):
            raise CorruptCheckpointError(
                f"Checkpoint step {step} in {self.directory} has no metadata (meta is "
                f"{type(restored.meta).__name__})"
            )
        return restored.state, dict(restored.meta)

    def _mismatched_shapes(self, target: Any, step: int) -> list[str]:
        """`path: checkpoint SHAPE, config SHAPE` for each differing tensor ([] when the saved
        metadata cannot be read or every shared tensor matches)."""
        try:
            saved = self._manager.item_metadata(step)["state"]
            saved = _shapes(getattr(saved, "tree", saved))
        except Exception:  # unreadable metadata: a damaged checkpoint, not another config
            return []
        wanted = _shapes(target)
        if not saved:
            return []
        lines = [
            f"{path}: checkpoint {saved[path]}, config {wanted[path]}"
            for path in wanted
            if path in saved and saved[path] != wanted[path]
        ]
        lines += [f"{path}: not in the checkpoint" for path in wanted if path not in saved]
        lines += [f"{path}: not in the config's model" for path in saved if path not in wanted]
        if len(lines) > _MAX_LISTED:
            lines = lines[:_MAX_LISTED] + [f"and {len(lines) - _MAX_LISTED} more"]
        return lines

    def _quarantine(self, step: int) -> str | None:
        """Renames an unreadable step folder `corrupt-<step>` (process 0); returns the new path
        (None when it could not be renamed)."""
        source = os.path.join(self.directory, str(step))
        target = os.path.join(self.directory, f"{CORRUPT_PREFIX}{step}")
        moved = None
        if jax.process_index() == 0 and os.path.isdir(source):
            n = 1
            while os.path.exists(target):
                n += 1
                target = os.path.join(self.directory, f"{CORRUPT_PREFIX}{step}.{n}")
            try:
                os.rename(source, target)
                moved = target
            except OSError:
                moved = None
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"ldm_jax_quarantine_{step}")
        self._manager.reload()
        return moved

    def close(self) -> None:
        self._manager.close()


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """`{"params/dense/kernel": shape}` of the arrays of a pytree (or orbax metadata tree)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
    return {
        "/".join(_key_name(k) for k in path): tuple(leaf.shape)
        for path, leaf in leaves
        if hasattr(leaf, "shape")
    }


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _short_reason(error: Exception) -> str:
    """The gist of an orbax / tensorstore error: the OS error when one is named (e.g. "No space
    left on device [errno 28]"), else its first 200 characters without the tensorstore spec."""
    text = " ".join(str(error).split())
    for marker in (" See full TensorStore details", " [tensorstore_spec"):
        text = text.split(marker)[0]
    code = re.search(r"os_error_code='(\d+)'", str(error))
    if code:
        return f"{os.strerror(int(code.group(1)))} [errno {code.group(1)}]"
    if len(text) > 200:
        text = text[:200].rsplit(" ", 1)[0] + " ..."
    return text or type(error).__name__


def _remove_folder(path: str, settle_s: float) -> None:
    """Removes `path`; with `settle_s`, again until it stays absent for `settle_s` seconds."""
    deadline = time.monotonic() + _REMOVE_TIMEOUT_S
    while True:
        shutil.rmtree(path, ignore_errors=True)
        if settle_s <= 0:
            return
        time.sleep(settle_s)
        if not os.path.exists(path):
            return
        if time.monotonic() > deadline:
            log.warning(
                "Could not remove the unfinished checkpoint folder %s (files kept appearing in "
                "it for %.0f s); delete it by hand once no process writes to it.",
                path,
                _REMOVE_TIMEOUT_S,
            )
            return


@contextlib.contextmanager
def abandoned_io_callbacks_silenced() -> Iterator[None]:
    """Drops the late callbacks of the reads or writes a failed orbax call abandoned.

    When one read or write fails, orbax closes its event loop while tensorstore still runs the
    call's other operations; as each finishes, its callback finds the loop closed and Python
    prints a `RuntimeError: Event loop is closed` traceback (an unraisable exception): dozens of
    them around the error, burying the one-line message. Inside the block, and after it when the
    block raised (the abandoned operations go on finishing), `sys.unraisablehook` drops exactly
    that exception and passes any other to the hook it replaced. A block that completes puts
    that hook back.
    """
    hook = sys.unraisablehook

    def without_abandoned_io_callbacks(unraisable: Any) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            return
        hook(unraisable)

    sys.unraisablehook = without_abandoned_io_callbacks
    yield  # not in try/finally: after an error the filter stays for the late callbacks
    sys.unraisablehook = hook
