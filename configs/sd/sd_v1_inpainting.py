"""Stable Diffusion v1 inpainting (v1-inpainting-inference): 9 input channels, hybrid conditioning.

Reference YAMLs (values copied field by field):
  runwayml/stable-diffusion configs/stable-diffusion/v1-inpainting-inference.yaml
Parameters: U-Net 859.5M + 4 extra input-conv channels.

  python -m ldm_jax.summary --config configs/sd/sd_v1_inpainting.py [--json]

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
    c.name = "sd_v1_inpainting"
    c.reference = "runwayml/stable-diffusion configs/stable-diffusion/v1-inpainting-inference.yaml"
    c.model = dict(
        conditioning_key="hybrid",
        first_stage=presets.first_stage("kl_f8"),
        unet=presets.unet("sd_v1", in_channels=9),  # z_t (4) + masked image's latent (4) + mask
        cond_stage=presets.cond_stage("frozen_clip_vit_l14"),
    )
    c.diffusion = presets.diffusion("sd")
    c.latent = dict(image_size=64, channels=4)
    c.data = dict(name="laion", image_size=512, channels=3)
    return experiment.finalize(c, arg)
