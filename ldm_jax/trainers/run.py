"""Runs the training stages a config asks for (autoencoder, LDM, or both) in one workdir."""

from __future__ import annotations

import os
import time

import jax

from ldm_jax.config.defaults import with_defaults
from ldm_jax.config.validation import validate_config
from ldm_jax.trainers import autoencoder as train_autoencoder
from ldm_jax.trainers import ldm as train_ldm
from ldm_jax.training.logging import MetricWriter
from ldm_jax.workdir import layout


def run(config, workdir: str) -> dict[str, float]:
    """Validates the config and runs the stage(s) it asks for; returns wall seconds per stage."""
    config = with_defaults(config)
    validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(layout.config_path(workdir), "w") as f:
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
