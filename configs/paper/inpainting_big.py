"""Inpainting LDM-VQ-4 'big' (paper Sec. 4.5, Tab. 7: 387M), VQ-f4 without attention.

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion models/ldm/inpainting_big/config.yaml
Parameters: 387M (U-Net).

  python -m ldm_jax.summary --config configs/paper/inpainting_big.py [--json]

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
    c.name = "inpainting_big"
    c.reference = "models/ldm/inpainting_big/config.yaml"
    c.model = dict(
        conditioning_key="concat",
        first_stage=presets.first_stage("vq_f4_noattn"),
        unet=dict(
            image_size=64,
            in_channels=7,  # z_t (3) + the masked image's latent (3) + the mask (1)
            out_channels=3,
            model_channels=256,
            attention_resolutions=(8, 4, 2),
            num_res_blocks=2,
            channel_mult=(1, 2, 3, 4),
            num_heads=8,
            resblock_updown=True,
        ),
        cond_stage=dict(kind="first_stage"),
    )
    c.diffusion = presets.diffusion("ldm", beta_end=0.0205, loss_type="l1")
    c.latent = dict(image_size=64, channels=3)
    c.data = dict(name="places365", image_size=256, channels=3)
    return experiment.finalize(c, arg)
