"""Unconditional LDM-VQ-4 on LSUN-Bedrooms 256 (paper Tab. 1; 274M-parameter U-Net).

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion configs/latent-diffusion/lsun_bedrooms-ldm-vq-4.yaml
  CompVis/latent-diffusion models/ldm/lsun_beds256/config.yaml
Parameters: U-Net 274M.

  python -m ldm_jax.summary --config configs/paper/lsun_bedrooms_ldm_vq4.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
"""

from __future__ import annotations

import pathlib

import ml_collections

from ldm_jax.config.files import load_config_file

BASE = pathlib.Path(__file__).with_name("celebahq_ldm_vq4.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The model config: `BASE` with the differences below; takes no argument."""
    if arg:
        raise ValueError(f"Unknown config argument {arg!r}; this config takes none.")
    c = load_config_file(BASE)
    c.name = "lsun_bedrooms_ldm_vq4"
    c.reference = "configs/latent-diffusion/lsun_bedrooms-ldm-vq-4.yaml"
    c.data.name = "lsun/bedroom"
    return c
