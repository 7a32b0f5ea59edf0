"""Stable Diffusion 2 base, 512 px, eps-prediction (v2-inference): linear transformer projections.

Reference YAMLs (values copied field by field):
  Stability-AI/stablediffusion configs/stable-diffusion/v2-inference.yaml
Parameters: U-Net 865.9M (OpenCLIP ViT-H/14 text encoder is external).

  python -m ldm_jax.summary --config configs/sd/sd_v2_base.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
The file states the model, diffusion and the paper's data as presets
(`ldm_jax/config/presets.py`) plus differences; `experiment.finalize` completes it into an
experiment config, and the argument `tiny` gives the seconds-long variant for tests.
"""

from __future__ import annotations

import ml_collections

from ldm_jax.config import experiment, presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The experiment config; `arg`: None or "tiny" (see `ldm_jax.config.experiment`)."""
    c = ml_collections.ConfigDict()
    c.name = "sd_v2_base"
    c.reference = "Stability-AI/stablediffusion configs/stable-diffusion/v2-inference.yaml"
    c.model = dict(
        conditioning_key="crossattn",
        first_stage=presets.first_stage("kl_f8"),
        unet=presets.unet("sd_v2"),
        cond_stage=presets.cond_stage("frozen_openclip_vit_h14"),
    )
    c.diffusion = presets.diffusion("sd")
    c.latent = dict(image_size=64, channels=4)
    c.data = dict(name="laion", image_size=512, channels=3)
    return experiment.finalize(c, arg)
