"""Unconditional LDM-VQ-4 on LSUN-Bedrooms 256 (paper Tab. 1; 274M-parameter U-Net).

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion configs/latent-diffusion/lsun_bedrooms-ldm-vq-4.yaml
  CompVis/latent-diffusion models/ldm/lsun_beds256/config.yaml
Parameters: U-Net 274M.

  python -m ldm_jax.summary --config configs/paper/lsun_bedrooms_ldm_vq4.py [--json]

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
    c.name = "lsun_bedrooms_ldm_vq4"
    c.reference = "configs/latent-diffusion/lsun_bedrooms-ldm-vq-4.yaml"
    c.model = dict(
        conditioning_key=None,
        first_stage=presets.first_stage("vq_f4"),
        unet=presets.unet("ldm_vq4_uncond"),
        cond_stage=dict(kind="none"),
    )
    c.diffusion = presets.diffusion("ldm")
    c.latent = dict(image_size=64, channels=3)
    c.data = dict(name="lsun/bedroom", image_size=256, channels=3)
    return experiment.finalize(c, arg)
