"""Class-conditional LDM-VQ-8 on ImageNet 256 (`cin256`; paper Tab. 3, 395M parameters).

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion configs/latent-diffusion/cin-ldm-vq-f8.yaml
  CompVis/latent-diffusion models/ldm/cin256/config.yaml
Parameters: 395M (U-Net + class embedder).

  python -m ldm_jax.summary --config configs/paper/cin_ldm_vq8.py [--json]

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
    c.name = "cin_ldm_vq8"
    c.reference = "configs/latent-diffusion/cin-ldm-vq-f8.yaml"
    c.model = dict(
        conditioning_key="crossattn",
        first_stage=presets.first_stage("vq_f8"),
        unet=dict(
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
        ),
        cond_stage=dict(kind="class", n_classes=1000, embed_dim=512, add_null_class=False),
    )
    c.diffusion = presets.diffusion("ldm")
    c.latent = dict(image_size=32, channels=4)
    c.data = dict(name="imagenet2012", image_size=256, channels=3, num_classes=1000)
    return experiment.finalize(c, arg)
