"""The step loop shared by both trainers: progress, logging, NaN guard, checkpoints."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from ldm_jax.training.checkpoint import Checkpointer
from ldm_jax.training.logging import MetricWriter, ProgressBar
from ldm_jax.training.state import TrainState

StepFn = Callable[[TrainState, dict[str, np.ndarray]], tuple[TrainState, dict[str, jax.Array]]]


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite; the last finite checkpoint is left untouched."""


class PreemptedError(RuntimeError):
    """SIGTERM arrived; a checkpoint of the current step was saved before stopping."""


class _SigtermFlag:
    """Records SIGTERM (preemption) instead of dying, while installed (main thread only)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def agreed(self) -> bool:
        """Whether any process has received SIGTERM (a collective when several processes run,
        so all of them save and stop at the same step instead of deadlocking in the save)."""
        if jax.process_count() == 1:
            return self.requested
        flags = multihost_utils.process_allgather(np.int32(self.requested))
        return bool(np.any(flags))

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def run_loop(
    *,
    name: str,
    state: TrainState,
    step_fn: StepFn,
    batches: Iterator[dict[str, Any]],
    total_steps: int,
    log_every: int,
    checkpoint_every: int,
    checkpointer: Checkpointer,
    writer: MetricWriter,
    meta_fn: Callable[[], dict[str, Any]],
    on_step: Callable[[int, TrainState], None] | None = None,
    learning_rate_field: str = "learning_rate",
) -> TrainState:
    """Runs `step_fn` until `state.step == total_steps`, saving every `checkpoint_every` steps.

    Args:
      name: stage name, used for the progress bar and metric prefixes.
      state: the state to continue from.
      step_fn: jitted (state, batch) -> (state, metrics of scalars).
      batches: iterator of host batches (its position must match `state.step`).
      total_steps: the step to stop at.
      log_every / checkpoint_every: intervals in steps.
      checkpointer: where checkpoints go; a final one is always written.
      writer: TensorBoard writer.
      meta_fn: returns the JSON metadata to save with a checkpoint (e.g. loader state); called
        right after the step that is saved.
      on_step: called with (step, state) after each step (e.g. to write sample grids).
      learning_rate_field: the config field named in the divergence message.

    Raises:
      TrainingDivergedError: when a loss becomes non-finite; no checkpoint is written after it.
      PreemptedError: after SIGTERM, once the current step is checkpointed (rerun to resume).
    """
    step = int(state.step)
    bar = ProgressBar(name, step, total_steps)
    finite = jnp.array(True)
    pending: list[dict[str, jax.Array]] = []
    last_saved = checkpointer.latest_step()

    def check_finite():
        if not bool(finite):
            bar.close()
            kept = f"step {last_saved}" if last_saved is not None else "none yet"
            raise TrainingDivergedError(
                f"{name}: the loss became NaN or infinite before step {step}. No checkpoint was "
                f"written after that; the last good one ({kept}) is in {checkpointer.directory}. "
                f"Lower config.{learning_rate_field} or set a positive "
                f"config.{learning_rate_field.rpartition('.')[0] or 'train'}.grad_clip and run "
                "again."
            )

    with _SigtermFlag() as preemption:
        try:
            while step < total_steps:
                state, metrics = step_fn(state, next(batches))
                step += 1
                finite = finite & jnp.isfinite(metrics["loss"])
                pending.append(metrics)
                if step % log_every == 0 or step == total_steps:
                    check_finite()
                    means = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
                    pending.clear()
                    rate = bar.update(step, {"loss": means["loss"]})
                    writer.scalars(
                        step,
                        {f"{name}/{k}": v for k, v in means.items()}
                        | {f"{name}/steps_per_sec": rate},
                    )
                preempted = preemption.agreed()
                if step % checkpoint_every == 0 or step == total_steps or preempted:
                    check_finite()
                    checkpointer.save(step, state, meta_fn())
                    last_saved = step
                if preempted:
                    raise PreemptedError(
                        f"{name}: SIGTERM received; saved a checkpoint at step {step} in "
                        f"{checkpointer.directory}. Run the same command again to resume."
                    )
                if on_step is not None:
                    on_step(step, state)
        finally:
            bar.close()
            writer.flush()
    return state
