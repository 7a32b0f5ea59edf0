"""Class-conditional LDM-VQ-8 on ImageNet 256 (`cin256`; paper Tab. 3, 395M parameters).

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion configs/latent-diffusion/cin-ldm-vq-f8.yaml
  CompVis/latent-diffusion models/ldm/cin256/config.yaml
Parameters: 395M (U-Net + class embedder).

  python -m ldm_jax.summary --config configs/paper/cin_ldm_vq8.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the model config; takes no argument."""
    if arg:
        raise ValueError(f"Unknown config argument {arg!r}; this config takes none.")
    c = ml_collections.ConfigDict()
    c.name = "cin_ldm_vq8"
    c.reference = "configs/latent-diffusion/cin-ldm-vq-f8.yaml"
    c.model = ml_collections.ConfigDict()
    c.model.conditioning_key = "crossattn"
    c.model.first_stage = ml_collections.ConfigDict(
        dict(
            kind="vq",
            embed_dim=4,
            n_embed=16384,
            double_z=False,
            z_channels=4,
            resolution=256,
            in_channels=3,
            out_ch=3,
            ch=128,
            ch_mult=(1, 2, 2, 4),
            num_res_blocks=2,
            attn_resolutions=(32,),
            dropout=0.0,
        )
    )
    c.model.unet = ml_collections.ConfigDict(
        dict(
            image_size=32,
            in_channels=4,
            out_channels=4,
            model_channels=256,
            attention_resolutions=(4, 2, 1),
            num_res_blocks=2,
            channel_mult=(1, 2, 4),
            num_head_channels=32,
            use_spatial_transformer=True,
            transformer_depth=1,
            context_dim=512,
        )
    )
    c.model.cond_stage = ml_collections.ConfigDict(
        dict(
            kind="class",
            n_classes=1000,
            embed_dim=512,
            add_null_class=False,
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
            image_size=32,
            channels=4,
        )
    )
    c.data = ml_collections.ConfigDict(
        dict(
            name="imagenet2012",
            image_size=256,
            channels=3,
            num_classes=1000,
        )
    )
    return c
