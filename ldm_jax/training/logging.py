"""Metric logging (TensorBoard event files via tensorboardX, no TensorFlow) and progress bars."""

from __future__ import annotations

import json
import logging as logging_std
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import tqdm
from absl import flags, logging

# Called with (step, {name: value}) for every logged row of scalars.
ScalarListener = Callable[[int, dict[str, float]], None]


class MetricWriter:
    """Writes scalars and images to TensorBoard event files in `logdir` (process 0 only).

    Scalars also go to `logdir/metrics.jsonl`, one JSON object per call:
    `{"step": 10, "ldm/loss": 0.12, ...}` (for scripts and tests; no TensorBoard needed), and to
    each of `listeners`, called as `listener(step, values)` (e.g. a notebook's live loss plot).
    """

    def __init__(self, logdir: str, listeners: Sequence[ScalarListener] = ()):
        self._writer = None
        self._jsonl = None
        self._listeners = tuple(listeners) if jax.process_index() == 0 else ()
        if jax.process_index() == 0:
            # Imported here: tensorboardX imports torch when it is installed (170 MB of
            # resident memory and a second of start-up for every entry point otherwise).
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(logdir)
            self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a")  # noqa: SIM115

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(name, float(value), step)
            row = {"step": int(step), **{k: float(v) for k, v in values.items()}}
            self._jsonl.write(json.dumps(row) + "\n")
        for listener in self._listeners:
            listener(int(step), {k: float(v) for k, v in values.items()})

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        """image: uint8 [H, W, C]."""
        if self._writer is not None:
            self._writer.add_image(name, image, step, dataformats="HWC")

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._jsonl.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._jsonl.close()


class ProgressBar:
    """A tqdm bar showing step, loss and steps/s (steps/s measured between updates)."""

    def __init__(self, description: str, start: int, total: int):
        self._bar = tqdm.tqdm(
            total=total,
            initial=start,
            desc=description,
            unit="step",
            dynamic_ncols=True,
            disable=jax.process_index() != 0,
        )
        self._last_step, self._last_time = start, time.perf_counter()

    def update(self, step: int, metrics: dict[str, Any]) -> float:
        """Moves the bar to `step`; returns the steps/s since the previous update."""
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._bar.update(step - self._last_step)
        self._bar.set_postfix(
            {**{k: f"{float(v):.4f}" for k, v in metrics.items()}, "steps/s": f"{rate:.2f}"}
        )
        self._last_step, self._last_time = step, now
        return rate

    def close(self) -> None:
        self._bar.close()


def info(message: str, *args: Any) -> None:
    """Logs a status line (absl INFO, %-style `args`) on process 0 only.

    Every status message of the library goes through here (no bare `print`), so multi-process
    runs print each line once and `--verbosity`/`--log_dir` control it like any absl log. The
    line names the caller's file and line, not this wrapper's.
    """
    if jax.process_index() == 0:
        logging.info(message, *args, stacklevel=2)


def warning(message: str, *args: Any) -> None:
    """Logs a warning (absl WARNING) on process 0 only, naming the caller's file and line."""
    if jax.process_index() == 0:
        logging.warning(message, *args, stacklevel=2)


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class _OwnInfoOnly(logging_std.Filter):
    """Passes warnings and errors from anywhere, but INFO and below only from ldm_jax."""

    def filter(self, record: logging_std.LogRecord) -> bool:
        return record.levelno >= logging_std.WARNING or record.pathname.startswith(_PACKAGE_DIR)


class _AboveProgressBars:
    """A stderr stream for the absl handler that writes log lines above the active tqdm bars
    (clearing and redrawing them, as `tqdm.write` does) instead of into a half-drawn bar."""

    def write(self, text: str) -> None:
        tqdm.tqdm.write(text, file=sys.stderr, end="")

    def flush(self) -> None:
        sys.stderr.flush()

    def close(self) -> None:  # absl closes its stream at exit; stderr stays open.
        pass


def show_own_status_only() -> None:
    """Shows ldm_jax's status lines at INFO and only warnings or errors of other libraries.

    Called first by every entry point (under `absl.app.run`, which logs at INFO): jax ("Unable
    to initialize backend ...") and orbax (every checkpoint step) would otherwise fill stderr and
    break into the progress bars. An explicit `--verbosity` shows every library's log at that
    level, as absl does. Log lines are written above the progress bars.
    """
    handler = logging.get_absl_handler()
    if handler.python_handler.stream is sys.stderr:
        handler.python_handler.stream = _AboveProgressBars()
    if flags.FLAGS["verbosity"].present:
        return
    logging.set_verbosity(logging.INFO)
    # A failed checkpoint write (a full disk) leaves orbax's write tasks failed; asyncio reports
    # each one again at exit ("Task exception was never retrieved") after the CLI's one-line
    # error, which already names the OS error (`CheckpointSaveError`).
    logging_std.getLogger("asyncio").setLevel(logging_std.CRITICAL)
    for target in (logging_std.getLogger("absl"), handler):
        if not any(isinstance(f, _OwnInfoOnly) for f in target.filters):
            target.addFilter(_OwnInfoOnly())
