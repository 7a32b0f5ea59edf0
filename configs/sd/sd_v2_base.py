"""Stable Diffusion 2 base, 512 px, eps-prediction (v2-inference): linear transformer projections.

Reference YAMLs (values copied field by field):
  Stability-AI/stablediffusion configs/stable-diffusion/v2-inference.yaml
Parameters: U-Net 865.9M (OpenCLIP ViT-H/14 text encoder is external).

  python -m ldm_jax.summary --config configs/sd/sd_v2_base.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the model config; takes no argument."""
    if arg:
        raise ValueError(f"Unknown config argument {arg!r}; this config takes none.")
    c = ml_collections.ConfigDict()
    c.name = "sd_v2_base"
    c.reference = "Stability-AI/stablediffusion configs/stable-diffusion/v2-inference.yaml"
    c.model = ml_collections.ConfigDict()
    c.model.conditioning_key = "crossattn"
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
            model_channels=320,
            attention_resolutions=(4, 2, 1),
            num_res_blocks=2,
            channel_mult=(1, 2, 4, 4),
            num_head_channels=64,
            use_spatial_transformer=True,
            use_linear_in_transformer=True,
            transformer_depth=1,
            context_dim=1024,
            legacy=False,
        )
    )
    c.model.cond_stage = ml_collections.ConfigDict(
        dict(
            kind="frozen_openclip",
            arch="ViT-H-14",
            version="laion2b_s32b_b79k",
            layer="penultimate",
            max_length=77,
        )
    )
    c.diffusion = ml_collections.ConfigDict(
        dict(
            schedule="scaled_linear",
            num_timesteps=1000,
            beta_start=0.00085,
            beta_end=0.012,
            parameterization="eps",
            loss_type="l2",
            scale_factor=0.18215,
            scale_by_std=False,
        )
    )
    c.latent = ml_collections.ConfigDict(
        dict(
            image_size=64,
            channels=4,
        )
    )
    c.data = ml_collections.ConfigDict(
        dict(
            name="laion",
            image_size=512,
            channels=3,
        )
    )
    return c
