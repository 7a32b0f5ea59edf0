"""Unconditional LDM-VQ-4 on CelebA-HQ 256 (paper Tab. 1; 274M-parameter U-Net).

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion configs/latent-diffusion/celebahq-ldm-vq-4.yaml
  CompVis/latent-diffusion models/ldm/celeba256/config.yaml
Parameters: U-Net 274M (reference log: 'DiffusionWrapper has 274.06 M params.').

  python -m ldm_jax.summary --config configs/paper/celebahq_ldm_vq4.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the model config; takes no argument."""
    if arg:
        raise ValueError(f"Unknown config argument {arg!r}; this config takes none.")
    c = ml_collections.ConfigDict()
    c.name = "celebahq_ldm_vq4"
    c.reference = "configs/latent-diffusion/celebahq-ldm-vq-4.yaml"
    c.model = ml_collections.ConfigDict()
    c.model.conditioning_key = None
    c.model.first_stage = ml_collections.ConfigDict(
        dict(
            kind="vq",
            embed_dim=3,
            n_embed=8192,
            double_z=False,
            z_channels=3,
            resolution=256,
            in_channels=3,
            out_ch=3,
            ch=128,
            ch_mult=(1, 2, 4),
            num_res_blocks=2,
            attn_resolutions=(),
            dropout=0.0,
        )
    )
    c.model.unet = ml_collections.ConfigDict(
        dict(
            image_size=64,
            in_channels=3,
            out_channels=3,
            model_channels=224,
            attention_resolutions=(8, 4, 2),
            num_res_blocks=2,
            channel_mult=(1, 2, 3, 4),
            num_head_channels=32,
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
            beta_end=0.0195,
            parameterization="eps",
            loss_type="l2",
            scale_factor=1.0,
            scale_by_std=False,
        )
    )
    c.latent = ml_collections.ConfigDict(
        dict(
            image_size=64,
            channels=3,
        )
    )
    c.data = ml_collections.ConfigDict(
        dict(
            name="celeb_a_hq",
            image_size=256,
            channels=3,
        )
    )
    return c
