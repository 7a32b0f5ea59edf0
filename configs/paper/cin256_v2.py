"""Class-conditional LDM-VQ-4 on ImageNet 256 with a null class for guidance (`cin256-v2`).

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion configs/latent-diffusion/cin256-v2.yaml
Parameters: (no figure in the paper; released with classifier-free guidance).

  python -m ldm_jax.summary --config configs/paper/cin256_v2.py [--json]

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
    c.name = "cin256_v2"
    c.reference = "configs/latent-diffusion/cin256-v2.yaml"
    c.model = dict(
        conditioning_key="crossattn",
        first_stage=presets.first_stage("vq_f4"),
        unet=presets.unet("cin256_v2"),
        cond_stage=dict(kind="class", n_classes=1001, embed_dim=512, add_null_class=True),
    )
    c.diffusion = presets.diffusion("ldm")
    c.latent = dict(image_size=64, channels=3)
    c.data = dict(name="imagenet2012", image_size=256, channels=3, num_classes=1000)
    return experiment.finalize(c, arg)
