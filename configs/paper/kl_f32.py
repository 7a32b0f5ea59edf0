"""First stage (model zoo, paper Tab. 8): KL-regularised autoencoder, f=32, z 8x8x64.

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion models/first_stage_models/kl-f32/config.yaml
Parameters: see tests/configs/test_paper_counts.py (diffusers-checked).

  python -m ldm_jax.summary --config configs/paper/kl_f32.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the model config; takes no argument."""
    if arg:
        raise ValueError(f"Unknown config argument {arg!r}; this config takes none.")
    c = ml_collections.ConfigDict()
    c.name = "kl_f32"
    c.reference = "models/first_stage_models/kl-f32/config.yaml"
    c.model = ml_collections.ConfigDict()
    c.model.first_stage = ml_collections.ConfigDict(
        dict(
            kind="kl",
            embed_dim=64,
            double_z=True,
            z_channels=64,
            resolution=256,
            in_channels=3,
            out_ch=3,
            ch=128,
            ch_mult=(1, 1, 2, 2, 4, 4),
            num_res_blocks=2,
            attn_resolutions=(16, 8),
            dropout=0.0,
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
