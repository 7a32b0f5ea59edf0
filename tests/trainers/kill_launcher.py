"""Runs the train CLI with a SIGKILL planted at one chosen point (for the kill-and-resume tests).

  LDM_JAX_KILL_AT=ldm:step:4 python tests/trainers/kill_launcher.py --config=... --workdir=...

All arguments go to `python -m ldm_jax.train` unchanged. `LDM_JAX_KILL_AT` is a comma-separated
list of `STAGE:WHEN:N`, with STAGE `autoencoder` or `ldm` and WHEN one of:

  step   SIGKILL while step N + 1 runs: a helper thread sends it a few milliseconds after step N's
         metrics are logged (needs `log_every=1`), usually while step N + 1 is being fetched,
         dispatched or computed. Should the thread be late, the next checkpoint save waits for
         it, so the kill always lands after step N and before any later checkpoint is written.
  write  SIGKILL while the checkpoint of step N is being written: orbax has written every file
         into its temporary folder, but has not yet renamed that folder to its final name.
  term   SIGTERM (preemption) right after step N's metrics are logged (needs `log_every=1`), so
         the trainer saves step N and exits; with `write` at the same N, the SIGKILL that follows
         a preemption notice when the grace period runs out lands in that emergency save.

Without `LDM_JAX_KILL_AT` this is the plain CLI. SIGKILL cannot be caught, so the process dies as
it would under the OOM killer or a lost machine: no handler, no flush, no cleanup.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time


def _die() -> None:
    """SIGKILLs this process (after flushing, so the test can see how far it got)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached: SIGKILL is delivered at once


def _plant_after_step(stage: str, step: int) -> None:
    """Kills shortly after `stage` logs step `step`, before its next checkpoint is written."""
    from ldm_jax.training import checkpoint, logging

    armed = threading.Event()
    log_scalars = logging.MetricWriter.scalars
    save = checkpoint.Checkpointer.save

    def scalars(self, at, values):
        log_scalars(self, at, values)
        if at == step and f"{stage}/loss" in values and not armed.is_set():
            armed.set()
            threading.Timer(0.005, _die).start()

    def guarded_save(self, *args, **kwargs):
        while armed.is_set():  # the kill is on its way: no checkpoint after step N
            time.sleep(1)
        return save(self, *args, **kwargs)

    logging.MetricWriter.scalars = scalars
    checkpoint.Checkpointer.save = guarded_save


def _plant_sigterm(stage: str, step: int) -> None:
    """Sends SIGTERM to this process when `stage` logs step `step`."""
    from ldm_jax.training import logging

    log_scalars = logging.MetricWriter.scalars

    def scalars(self, at, values):
        log_scalars(self, at, values)
        if at == step and f"{stage}/loss" in values:
            os.kill(os.getpid(), signal.SIGTERM)

    logging.MetricWriter.scalars = scalars


def _plant_in_write(stage: str, step: int) -> None:
    """Kills when orbax is about to rename the finished temporary folder of `stage` step N."""
    final = os.path.join("checkpoints", stage, str(step))

    def wrap(rename):
        def guarded(src, dst, *args, **kwargs):
            src, dst = os.fspath(src), os.fspath(dst)
            if dst.endswith(os.sep + final) and ".orbax-checkpoint-tmp" in src:
                _die()
            return rename(src, dst, *args, **kwargs)

        return guarded

    os.rename = wrap(os.rename)
    os.replace = wrap(os.replace)


def main() -> None:
    plants = {"step": _plant_after_step, "write": _plant_in_write, "term": _plant_sigterm}
    for spec in filter(None, os.environ.get("LDM_JAX_KILL_AT", "").split(",")):
        stage, when, step = spec.split(":")
        plants[when](stage, int(step))
    sys.argv = ["ldm_jax.train", *sys.argv[1:]]
    runpy.run_module("ldm_jax.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
