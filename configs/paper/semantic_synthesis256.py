"""Semantic synthesis LDM-VQ-4 (landscapes, 182 COCO-Stuff classes; paper Sec. 4.3.2, 215M).

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion models/ldm/semantic_synthesis256/config.yaml
Parameters: 215M (U-Net + spatial rescaler).

  python -m ldm_jax.summary --config configs/paper/semantic_synthesis256.py [--json]

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
    c.name = "semantic_synthesis256"
    c.reference = "models/ldm/semantic_synthesis256/config.yaml"
    c.model = dict(
        conditioning_key="concat",
        first_stage=presets.first_stage("vq_f4"),
        unet=presets.unet("semantic_synthesis"),
        cond_stage=dict(
            kind="spatial_rescaler",
            n_stages=2,
            method="bilinear",
            multiplier=0.5,
            in_channels=182,
            out_channels=3,
            bias=False,
        ),
    )
    c.diffusion = presets.diffusion("ldm", beta_end=0.0205, loss_type="l1")
    c.latent = dict(image_size=64, channels=3)
    c.data = dict(name="flickr_landscapes", image_size=256, channels=3)
    return experiment.finalize(c, arg)
