"""Text-to-image LDM-KL-8 on LAION-400M (`txt2img-1p4B-eval`; paper Sec. 4.3, 1.45B parameters).

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion configs/latent-diffusion/txt2img-1p4B-eval.yaml
Parameters: 1.45B in total: U-Net + the 32-layer, 1280-wide BERT-like transformer (+ KL-f8).

  python -m ldm_jax.summary --config configs/paper/txt2img_1p4b.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the model config; takes no argument."""
    if arg:
        raise ValueError(f"Unknown config argument {arg!r}; this config takes none.")
    c = ml_collections.ConfigDict()
    c.name = "txt2img_1p4b"
    c.reference = "configs/latent-diffusion/txt2img-1p4B-eval.yaml"
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
            num_heads=8,
            use_spatial_transformer=True,
            transformer_depth=1,
            context_dim=1280,
            legacy=False,
        )
    )
    c.model.cond_stage = ml_collections.ConfigDict(
        dict(
            kind="bert",
            n_embed=1280,
            n_layer=32,
            vocab_size=30522,
            max_seq_len=77,
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
            image_size=32,
            channels=4,
        )
    )
    c.data = ml_collections.ConfigDict(
        dict(
            name="laion400m",
            image_size=256,
            channels=3,
        )
    )
    return c
