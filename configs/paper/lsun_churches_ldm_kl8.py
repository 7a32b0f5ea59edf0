"""Unconditional LDM-KL-8 on LSUN-Churches 256 (paper Tab. 1; 295M-parameter U-Net).

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion configs/latent-diffusion/lsun_churches-ldm-kl-8.yaml
  CompVis/latent-diffusion models/ldm/lsun_churches256/config.yaml
Parameters: U-Net 295M.

  python -m ldm_jax.summary --config configs/paper/lsun_churches_ldm_kl8.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the model config; takes no argument."""
    if arg:
        raise ValueError(f"Unknown config argument {arg!r}; this config takes none.")
    c = ml_collections.ConfigDict()
    c.name = "lsun_churches_ldm_kl8"
    c.reference = "configs/latent-diffusion/lsun_churches-ldm-kl-8.yaml"
    c.model = ml_collections.ConfigDict()
    c.model.conditioning_key = None
    c.model.first_stage = ml_collections.ConfigDict(
        dict(
            kind="kl",
            embed_dim=4,
            double_z=True,
            z_channels=4,
            resolution=256,
            in_channels=3,
            out_ch=3,
            ch=128,
            ch_mult=(1, 2, 4, 4),
            num_res_blocks=2,
            attn_resolutions=(),
            dropout=0.0,
        )
    )
    c.model.unet = ml_collections.ConfigDict(
        dict(
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
        )
    )
    c.model.cond_stage = ml_collections.ConfigDict(
        dict(
            kind="none",
        )
    )
    c.diffusion = ml_collections.ConfigDict(
        dict(
            schedule="scaled_linear",
            num_timesteps=1000,
            beta_start=0.0015,
            beta_end=0.0155,
            parameterization="eps",
            loss_type="l1",
            scale_factor=1.0,
            scale_by_std=True,
        )
    )
    c.latent = ml_collections.ConfigDict(
        dict(
            image_size=32,
            channels=4,
        )
    )
    c.data = ml_collections.ConfigDict(
        dict(
            name="lsun/church_outdoor",
            image_size=256,
            channels=3,
        )
    )
    return c
