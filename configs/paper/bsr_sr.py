"""4x super-resolution LDM-VQ-4 (`bsr_sr`, BSR degradation; paper Sec. 4.4): 169M total.

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion models/ldm/bsr_sr/config.yaml
Parameters: 169M = 113.6M U-Net + 55.3M VQ-f4 first stage.

  python -m ldm_jax.summary --config configs/paper/bsr_sr.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the model config; takes no argument."""
    if arg:
        raise ValueError(f"Unknown config argument {arg!r}; this config takes none.")
    c = ml_collections.ConfigDict()
    c.name = "bsr_sr"
    c.reference = "models/ldm/bsr_sr/config.yaml"
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
        )
    )
    c.model.unet = ml_collections.ConfigDict(
        dict(
            image_size=64,
            in_channels=6,
            out_channels=3,
            model_channels=160,
            attention_resolutions=(16, 8),
            num_res_blocks=2,
            channel_mult=(1, 2, 2, 4),
            num_head_channels=32,
        )
    )
    c.model.cond_stage = ml_collections.ConfigDict(
        dict(
            kind="identity",
        )
    )
    c.diffusion = ml_collections.ConfigDict(
        dict(
            schedule="scaled_linear",
            num_timesteps=1000,
            beta_start=0.0015,
            beta_end=0.0155,
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
            name="open_images_v4",
            image_size=256,
            channels=3,
        )
    )
    return c
