"""First stage (model zoo, paper Tab. 8): VQ autoencoder, f=4, 8192 codes of width 3.

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion models/first_stage_models/vq-f4/config.yaml
Parameters: see tests/configs/test_paper_counts.py (diffusers-checked).

  python -m ldm_jax.summary --config configs/paper/vq_f4.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
The first stage is a preset (`ldm_jax/config/presets.py`); `experiment.finalize` completes the
file into an autoencoder experiment config, and the argument `tiny` gives the seconds-long
variant for tests.
"""

from __future__ import annotations

import ml_collections

from ldm_jax.config import experiment, presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The experiment config; `arg`: None or "tiny" (see `ldm_jax.config.experiment`)."""
    c = ml_collections.ConfigDict()
    c.name = "vq_f4"
    c.reference = "models/first_stage_models/vq-f4/config.yaml"
    c.model = dict(first_stage=presets.first_stage("vq_f4"))
    c.data = dict(name="open_images_v4", image_size=256, channels=3)
    c.autoencoder_train = presets.first_stage_training("vq_f4")
    return experiment.finalize(c, arg)
