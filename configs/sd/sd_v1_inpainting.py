"""Stable Diffusion v1 inpainting (v1-inpainting-inference): 9 input channels, hybrid conditioning.

Reference YAMLs (values copied field by field):
  runwayml/stable-diffusion configs/stable-diffusion/v1-inpainting-inference.yaml
Parameters: U-Net 859.5M + 4 extra input-conv channels.

  python -m ldm_jax.summary --config configs/sd/sd_v1_inpainting.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
"""

from __future__ import annotations

import pathlib

import ml_collections

from ldm_jax.config.files import load_config_file

BASE = pathlib.Path(__file__).with_name("sd_v1.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The model config: `BASE` with the differences below; takes no argument."""
    if arg:
        raise ValueError(f"Unknown config argument {arg!r}; this config takes none.")
    c = load_config_file(BASE)
    c.name = "sd_v1_inpainting"
    c.reference = "runwayml/stable-diffusion configs/stable-diffusion/v1-inpainting-inference.yaml"
    c.model.conditioning_key = "hybrid"
    c.model.unet.in_channels = 9  # z_t (4) + mask (1) + masked-image latent (4)
    return c
