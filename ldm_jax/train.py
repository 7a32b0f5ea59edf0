"""Trains a latent diffusion model: stage 1 (autoencoder), stage 2 (LDM), or both.

  python -m ldm_jax.train --config configs/quickstart.py --workdir runs/quickstart \
      [--config.train.steps=200 ...]

Running again on the same workdir resumes from the latest checkpoints; raising a `steps` value
extends a finished run.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

from ldm_jax.cli_errors import user_errors_as_exit
from ldm_jax.training import train_autoencoder, train_ldm
from ldm_jax.training.config_defaults import with_defaults
from ldm_jax.training.config_validation import validate_config
from ldm_jax.training.logging import MetricWriter

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Folder for config.json, checkpoints, logs and samples."
)
flags.mark_flags_as_required(["config", "workdir"])


def run(config, workdir: str) -> dict[str, float]:
    """Validates the config and runs the stage(s) it asks for; returns wall seconds per stage."""
    config = with_defaults(config)
    validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    writer = MetricWriter(workdir)
    timings = {}
    try:
        start = time.perf_counter()
        if config.stage in ("autoencoder", "both"):
            ae_params = train_autoencoder.train_autoencoder(config, workdir, writer)
        else:
            ae_params = train_autoencoder.restore_params(workdir, config)
        timings["autoencoder_s"] = time.perf_counter() - start
        if config.stage in ("ldm", "both"):
            start = time.perf_counter()
            train_ldm.train_ldm(config, workdir, ae_params, writer)
            timings["ldm_s"] = time.perf_counter() - start
    finally:
        writer.close()
    return timings


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
