"""Inpainting LDM-VQ-4 'big' (paper Sec. 4.5, Tab. 7: 387M), VQ-f4 without attention.

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion models/ldm/inpainting_big/config.yaml
Parameters: 387M (U-Net).

  python -m ldm_jax.summary --config configs/paper/inpainting_big.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the model config; takes no argument."""
    if arg:
        raise ValueError(f"Unknown config argument {arg!r}; this config takes none.")
    c = ml_collections.ConfigDict()
    c.name = "inpainting_big"
    c.reference = "models/ldm/inpainting_big/config.yaml"
    c.model = ml_collections.ConfigDict()
    c.model.conditioning_key = "concat"
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
            attn_type="none",
        )
    )
    c.model.unet = ml_collections.ConfigDict(
        dict(
            image_size=64,
            in_channels=7,
            out_channels=3,
            model_channels=256,
            attention_resolutions=(8, 4, 2),
            num_res_blocks=2,
            channel_mult=(1, 2, 3, 4),
            num_heads=8,
            resblock_updown=True,
        )
    )
    c.model.cond_stage = ml_collections.ConfigDict(
        dict(
            kind="first_stage",
        )
    )
    c.diffusion = ml_collections.ConfigDict(
        dict(
            schedule="scaled_linear",
            num_timesteps=1000,
            beta_start=0.0015,
            beta_end=0.0205,
            parameterization="eps",
            loss_type="l1",
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
            name="places365",
            image_size=256,
            channels=3,
        )
    )
    return c
