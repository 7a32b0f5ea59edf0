"""Unconditional LDM-KL-8 on LSUN-Churches 256 (paper Tab. 1; 295M-parameter U-Net).

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion configs/latent-diffusion/lsun_churches-ldm-kl-8.yaml
  CompVis/latent-diffusion models/ldm/lsun_churches256/config.yaml
Parameters: U-Net 295M.

  python -m ldm_jax.summary --config configs/paper/lsun_churches_ldm_kl8.py [--json]

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
    c.name = "lsun_churches_ldm_kl8"
    c.reference = "configs/latent-diffusion/lsun_churches-ldm-kl-8.yaml"
    c.model = dict(
        conditioning_key=None,
        first_stage=presets.first_stage("kl_f8"),
        unet=dict(
            image_size=32,
            in_channels=4,
            out_channels=4,
            model_channels=192,
            attention_resolutions=(1, 2, 4, 8),
            num_res_blocks=2,
            channel_mult=(1, 2, 2, 4, 4),
            num_heads=8,
            use_scale_shift_norm=True,
            resblock_updown=True,
        ),
        cond_stage=dict(kind="none"),
    )
    c.diffusion = presets.diffusion("ldm", beta_end=0.0155, loss_type="l1", scale_by_std=True)
    c.latent = dict(image_size=32, channels=4)
    c.data = dict(name="lsun/church_outdoor", image_size=256, channels=3)
    return experiment.finalize(c, arg)
