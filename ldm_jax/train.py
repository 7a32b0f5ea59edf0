"""Trains a latent diffusion model: stage 1 (autoencoder), stage 2 (LDM), or both.

  python -m ldm_jax.train --config configs/quickstart.py --workdir runs/quickstart \
      [--config.train.steps=200 ...]

Running again on the same workdir resumes from the latest checkpoints; raising a `steps` value
extends a finished run.
"""

from __future__ import annotations

import json

from absl import app, flags, logging
from ml_collections import config_flags

from ldm_jax.cli_errors import user_errors_as_exit
from ldm_jax.training.run_training import run

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Folder for config.json, checkpoints, logs and samples."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    with user_errors_as_exit("python -m ldm_jax.train"):
        logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO.
        timings = run(_CONFIG.value, _WORKDIR.value)
        print(
            json.dumps({"workdir": _WORKDIR.value, **{k: round(v, 1) for k, v in timings.items()}})
        )


if __name__ == "__main__":
    app.run(main)
