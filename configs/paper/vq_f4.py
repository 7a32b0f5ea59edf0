"""First stage (model zoo, paper Tab. 8): VQ autoencoder, f=4, 8192 codes of width 3.

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion models/first_stage_models/vq-f4/config.yaml
Parameters: see tests/configs/test_paper_counts.py (diffusers-checked).

  python -m ldm_jax.summary --config configs/paper/vq_f4.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the model config; takes no argument."""
    if arg:
        raise ValueError(f"Unknown config argument {arg!r}; this config takes none.")
    c = ml_collections.ConfigDict()
    c.name = "vq_f4"
    c.reference = "models/first_stage_models/vq-f4/config.yaml"
    c.model = ml_collections.ConfigDict()
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
    c.data = ml_collections.ConfigDict(
        dict(
            name="open_images_v4",
            image_size=256,
            channels=3,
        )
    )
    return c
