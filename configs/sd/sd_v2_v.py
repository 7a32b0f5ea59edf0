"""Stable Diffusion 2, 768 px, v-prediction (v2-inference-v).

Reference YAMLs (values copied field by field):
  Stability-AI/stablediffusion configs/stable-diffusion/v2-inference-v.yaml
Parameters: U-Net 865.9M (OpenCLIP ViT-H/14 text encoder is external).

  python -m ldm_jax.summary --config configs/sd/sd_v2_v.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
"""

from __future__ import annotations

import pathlib

import ml_collections

from ldm_jax.config.files import load_config_file

BASE = pathlib.Path(__file__).with_name("sd_v2_base.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The model config: `BASE` with the differences below; takes no argument."""
    if arg:
        raise ValueError(f"Unknown config argument {arg!r}; this config takes none.")
    c = load_config_file(BASE)
    c.name = "sd_v2_v"
    c.reference = "Stability-AI/stablediffusion configs/stable-diffusion/v2-inference-v.yaml"
    c.diffusion.parameterization = "v"
    c.latent.image_size = 96
    c.data.image_size = 768
    return c
