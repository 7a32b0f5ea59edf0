"""Semantic synthesis LDM-VQ-4 at 512 (`models/ldm/semantic_synthesis512`), same networks.

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion models/ldm/semantic_synthesis512/config.yaml
Parameters: 215M (U-Net + spatial rescaler).

  python -m ldm_jax.summary --config configs/paper/semantic_synthesis512.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
"""

from __future__ import annotations

import pathlib

import ml_collections

from ldm_jax.config.files import load_config_file

BASE = pathlib.Path(__file__).with_name("semantic_synthesis256.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The model config: `BASE` with the differences below; takes no argument."""
    if arg:
        raise ValueError(f"Unknown config argument {arg!r}; this config takes none.")
    c = load_config_file(BASE)
    c.name = "semantic_synthesis512"
    c.reference = "models/ldm/semantic_synthesis512/config.yaml"
    c.model.unet.image_size = 128
    c.latent.image_size = 128
    c.data.image_size = 512
    return c
