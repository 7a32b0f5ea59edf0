"""The step loop shared by both trainers: progress, logging, NaN guard, checkpoints."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from ldm_jax.training import logging as log
from ldm_jax.training.checkpoint import Checkpointer
from ldm_jax.training.finite_guard import NONFINITE_METRIC
from ldm_jax.training.logging import MetricWriter, ProgressBar
from ldm_jax.training.loss_spikes import LossSpikeDetector
from ldm_jax.training.state import TrainState

StepFn = Callable[[TrainState, dict[str, np.ndarray]], tuple[TrainState, dict[str, jax.Array]]]


class TrainingDivergedError(FloatingPointError):
    """The loss or a gradient became NaN or infinite; the last finite checkpoint is kept."""


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
    nonfinite_names: Sequence[str] = ("loss",),
    skip_nonfinite: bool = False,
) -> TrainState:
    """Runs `step_fn` until `state.step == total_steps`, saving every `checkpoint_every` steps.

    Args:
      name: stage name, used for the progress bar and metric prefixes.
      state: the state to continue from.
      step_fn: jitted (state, batch) -> (state, metrics of scalars). The int32 metric
        `nonfinite` (`finite_guard.first_nonfinite`), when present, says which tensor of the
        update was not finite; without it only the loss is checked.
      batches: iterator of host batches (its position must match `state.step`).
      total_steps: the step to stop at.
      log_every / checkpoint_every: intervals in steps.
      checkpointer: where checkpoints go; a final one is always written.
      writer: TensorBoard writer.
      meta_fn: returns the JSON metadata to save with a checkpoint (e.g. loader state); called
        right after the step that is saved.
      on_step: called with (step, state) after each step (e.g. to write sample grids).
      learning_rate_field: the config field named in the divergence message (its section also
        names `grad_clip` and `on_nonfinite`).
      nonfinite_names: the names of the tensors the `nonfinite` metric indexes
        (`finite_guard.tensor_names`).
      skip_nonfinite: the step function skips non-finite updates (`finite_guard.guard`): log
        them and go on instead of stopping.

    Raises:
      TrainingDivergedError: when the loss or a gradient becomes non-finite (and
        `skip_nonfinite` is off), naming the step and the tensor; no checkpoint is written
        after it.
      PreemptedError: after SIGTERM, once the current step is checkpointed (rerun to resume).
    """
    step = int(state.step)
    bar = ProgressBar(name, step, total_steps)
    # The first non-finite step and tensor, kept on the device so steps stay asynchronous.
    bad_step = bad_tensor = jnp.int32(-1)
    pending: list[tuple[int, dict[str, jax.Array]]] = []
    last_saved = checkpointer.latest_step()
    section = learning_rate_field.rpartition(".")[0] or "train"
    spikes = LossSpikeDetector()
    skipped = 0

    def check_finite():
        if int(bad_step) < 0:
            return
        bar.close()
        kept = f"step {last_saved}" if last_saved is not None else "none yet"
        raise TrainingDivergedError(
            f"{name}: step {int(bad_step)} produced a non-finite "
            f"{_tensor_name(nonfinite_names, int(bad_tensor))} (NaN or infinite). No checkpoint "
            f"was written after that; the last good one ({kept}) is in "
            f"{checkpointer.directory}. Lower config.{learning_rate_field} or set a positive "
            f"config.{section}.grad_clip and run again (config.{section}.on_nonfinite='skip' "
            "skips such steps instead)."
        )

    def log_rows():
        nonlocal skipped
        rows = []
        for at, metrics in pending:
            report = int(metrics.get(NONFINITE_METRIC, -1))
            if report >= 0:
                skipped += 1
                log.warning(
                    "%s: skipped step %d: non-finite %s; parameters left unchanged",
                    name,
                    at,
                    _tensor_name(nonfinite_names, report),
                )
                continue
            values = {k: float(v) for k, v in metrics.items() if k != NONFINITE_METRIC}
            spike = spikes.observe(at, values["loss"])
            if spike:
                log.warning("%s: %s", name, spike)
            rows.append(values)
        pending.clear()
        return rows

    with _SigtermFlag() as preemption:
        try:
            while step < total_steps:
                state, metrics = step_fn(state, next(batches))
                step += 1
                report = metrics.get(NONFINITE_METRIC)
                if report is None:
                    report = jnp.where(jnp.isfinite(metrics["loss"]), -1, 0)
                if not skip_nonfinite:
                    first = (bad_step < 0) & (report >= 0)
                    bad_step = jnp.where(first, step, bad_step)
                    bad_tensor = jnp.where(first, report, bad_tensor)
                pending.append((step, metrics))
                if step % log_every == 0 or step == total_steps:
                    check_finite()
                    rows = log_rows()
                    means = (
                        {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}
                    )
                    rate = bar.update(step, {"loss": means["loss"]} if rows else {})
                    scalars = {f"{name}/{k}": v for k, v in means.items()}
                    scalars[f"{name}/steps_per_sec"] = rate
                    if skip_nonfinite:
                        scalars[f"{name}/skipped_steps"] = float(skipped)
                    if spikes.count:
                        scalars[f"{name}/loss_spikes"] = float(spikes.count)
                    writer.scalars(step, scalars)
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


def _tensor_name(names: Sequence[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else f"tensor #{index}"
