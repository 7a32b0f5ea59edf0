"""Trains a latent diffusion model: stage 1 (autoencoder), stage 2 (LDM), or both.

  python -m ldm_jax.train --config configs/quickstart.py --workdir runs/quickstart \
      [--config.train.steps=200 ...]

Running again on the same workdir resumes from the latest checkpoints; raising a `steps` value
extends a finished run. Several processes (hosts) train together when each runs the same command
with --coordinator_address=HOST:PORT --num_processes=N --process_id=I (detected automatically
on TPU pods and SLURM); see ldm_jax/parallel/distributed.py.
"""

from __future__ import annotations

from ldm_jax.training import host_memory

# First, before the heavy imports: glibc reads its tunables only when a process starts.
host_memory.rerun_with_huge_pages("ldm_jax.train")

import json

from absl import app, flags
from ml_collections import config_flags

from ldm_jax import cli_errors
from ldm_jax.parallel import distributed
from ldm_jax.trainers.run import run
from ldm_jax.training import logging as log

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Folder for config.json, checkpoints, logs and samples."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "Multi-process: HOST:PORT of process 0 (with --num_processes and --process_id; not needed "
    "on TPU pods or SLURM, where JAX detects the cluster).",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.")
flags.mark_flags_as_required(["config", "workdir"])


PROGRAM = "python -m ldm_jax.train"


def main(argv):
    log.show_own_status_only()
    with cli_errors.user_errors_as_exit(PROGRAM):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        except ValueError as e:
            raise app.UsageError(str(e)) from None
        timings = run(_CONFIG.value, _WORKDIR.value)
        print(
            json.dumps({"workdir": _WORKDIR.value, **{k: round(v, 1) for k, v in timings.items()}})
        )


if __name__ == "__main__":
    cli_errors.run(main, PROGRAM)
