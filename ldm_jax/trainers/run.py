"""Runs the training stages a config asks for (autoencoder, LDM, or both; or fine-tuning of
another workdir's model, `trainers/finetune.py`) in one workdir.

The LDM stage takes its frozen first stage from stage 1 of the same workdir, or from
`config.train.first_stage_workdir` (another trained workdir, or a `python -m ldm_jax.convert`
output); the borrowed weights are checked against the config's first stage and copied into this
workdir's `checkpoints/autoencoder` (when it has none), so the workdir samples on its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from ldm_jax.config.defaults import with_defaults
from ldm_jax.config.model_config import has_model_section
from ldm_jax.config.validation import ConfigError, validate_config
from ldm_jax.trainers import autoencoder as train_autoencoder
from ldm_jax.trainers import captions, finetune, finetune_base
from ldm_jax.trainers import ldm as train_ldm
from ldm_jax.training import logging as log
from ldm_jax.training.checkpoint import (
    Checkpointer,
    IncompatibleCheckpointError,
    MissingCheckpointError,
)
from ldm_jax.training.logging import MetricWriter, ScalarListener
from ldm_jax.workdir import layout
from ldm_jax.workdir.reader import has_first_stage_params, load_first_stage_params


def first_stage_params(config: ml_collections.ConfigDict, workdir: str) -> Any:
    """The frozen first stage for an LDM-only run (see the module docstring)."""
    other = config.train.get("first_stage_workdir", "") if "train" in config else ""
    if not other:
        try:
            if not has_model_section(config):
                return train_autoencoder.restore_params(workdir, config)
            return load_first_stage_params(workdir, config)
        except MissingCheckpointError as e:
            raise ConfigError(
                f"config.stage='ldm' needs a trained first stage: {e} Train it here with "
                "--config.stage=both, or borrow one with --config.train.first_stage_workdir=DIR "
                "(a trained or converted workdir)."
            ) from None
    if not os.path.isdir(other):
        raise ConfigError(f"config.train.first_stage_workdir: {other} is not a folder.")
    params = load_first_stage_params(other, config)
    if not has_first_stage_params(config):  # The identity first stage: nothing to copy.
        return params
    log.info("ldm: first stage from %s", other)
    own = Checkpointer(layout.checkpoint_dir(workdir, "autoencoder"), 1)
    if own.latest_step() is None:  # Every process takes part in an orbax save.
        own.save(0, {"step": jnp.zeros((), jnp.int32), "params": params}, {"from": other})
    own.close()
    return params


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    listeners: Sequence[ScalarListener] = (),
) -> dict[str, float]:
    """Validates the config and runs the stage(s) it asks for; returns wall seconds per stage.

    Args:
      config: an experiment config (`configs/*.py`'s `get_config`).
      workdir: the run's folder (created; an existing run resumes).
      listeners: called with `(step, {name: value})` for each logged row of scalars, on process
        0 (the training metrics also go to TensorBoard and `metrics.jsonl`).
    """
    config = with_defaults(config)
    if config.get("stage") == finetune.STAGE:
        config = with_defaults(finetune_base.resolve_config(config))
    validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    if config.stage != "autoencoder" and has_model_section(config):
        captions.prepare_vocab_field(config, workdir)
    previous = _write_config_json(config, workdir)
    writer = MetricWriter(workdir, listeners)
    timings = {}
    try:
        start = time.perf_counter()
        if config.stage in ("autoencoder", "both"):
            ae_params = train_autoencoder.train_autoencoder(config, workdir, writer)
        else:
            ae_params = first_stage_params(config, workdir)
        timings["autoencoder_s"] = time.perf_counter() - start
        if config.stage in ("ldm", "both"):
            start = time.perf_counter()
            train_ldm.train_ldm(config, workdir, ae_params, writer)
            timings["ldm_s"] = time.perf_counter() - start
        if config.stage == finetune.STAGE:
            start = time.perf_counter()
            finetune.train_finetune(config, workdir, ae_params, writer)
            timings["finetune_s"] = time.perf_counter() - start
    except IncompatibleCheckpointError:
        # The workdir's checkpoints belong to its previous config: put its record back.
        if previous is not None and jax.process_index() == 0:
            with open(layout.config_path(workdir), "w") as f:
                f.write(previous)
        raise
    finally:
        writer.close()
    return timings


def _write_config_json(config: ml_collections.ConfigDict, workdir: str) -> str | None:
    """Writes the run's config.json (process 0); returns the text it replaced, if any."""
    if jax.process_index() != 0:
        return None
    path = layout.config_path(workdir)
    previous = None
    if os.path.exists(path):
        with open(path) as f:
            previous = f.read()
    with open(path, "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    return previous
