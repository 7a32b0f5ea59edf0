"""Reads a finished (or running) training workdir back: config, weights, latent scale."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import ml_collections

from ldm_jax.training import train_autoencoder, train_ldm
from ldm_jax.training.checkpoint import MissingCheckpointError
from ldm_jax.training.config_defaults import with_defaults


@dataclasses.dataclass(frozen=True)
class TrainedLDM:
    """What sampling needs from a workdir.

    Attributes:
      config: the run's config (from config.json).
      ae_params: first-stage parameters.
      ldm_params: EMA parameters of the denoiser (U-Net + condition encoder).
      scale_factor: latent scale (z fed to the diffusion is scale_factor * E(x)).
      step: the LDM training step of the checkpoint.
    """

    config: ml_collections.ConfigDict
    ae_params: Any
    ldm_params: Any
    scale_factor: float
    step: int


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise MissingCheckpointError(
            f"{path} not found: {workdir!r} is not a training workdir. Train one with: "
            f"python -m ldm_jax.train --config configs/quickstart.py --workdir {workdir}"
        )
    with open(path) as f:
        return with_defaults(ml_collections.ConfigDict(json.load(f)))


def load_trained_ldm(workdir: str) -> TrainedLDM:
    """Restores the latest autoencoder and LDM (EMA) checkpoints of a workdir.

    Raises:
      MissingCheckpointError: naming the missing folder and the command that creates it.
    """
    config = load_config(workdir)
    ae_params = train_autoencoder.restore_params(workdir, config)
    state, meta = train_ldm.restore(workdir, config)
    return TrainedLDM(
        config=config,
        ae_params=ae_params,
        ldm_params=state.ema_params,
        scale_factor=float(meta["scale_factor"]),
        step=int(state.step),
    )
