"""Stable Diffusion 2 base, 512 px, eps-prediction (v2-inference): linear transformer projections.

Reference YAMLs (values copied field by field):
  Stability-AI/stablediffusion configs/stable-diffusion/v2-inference.yaml
Parameters: U-Net 865.9M (OpenCLIP ViT-H/14 text encoder is external).

  python -m ldm_jax.summary --config configs/sd/sd_v2_base.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
"""

from __future__ import annotations

import pathlib

import ml_collections

from ldm_jax.config.files import load_config_file

BASE = pathlib.Path(__file__).with_name("sd_v1.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The model config: `BASE` (SD v1) with the differences below; takes no argument."""
    if arg:
        raise ValueError(f"Unknown config argument {arg!r}; this config takes none.")
    c = load_config_file(BASE)
    c.name = "sd_v2_base"
    c.reference = "Stability-AI/stablediffusion configs/stable-diffusion/v2-inference.yaml"
    unet = c.model.unet
    del unet["num_heads"]
    unet.num_head_channels = 64
    unet.use_linear_in_transformer = True
    unet.context_dim = 1024
    c.model.cond_stage = ml_collections.ConfigDict(
        dict(
            kind="frozen_openclip",
            arch="ViT-H-14",
            version="laion2b_s32b_b79k",
            layer="penultimate",
            max_length=77,
        )
    )
    return c
