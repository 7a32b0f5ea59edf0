"""4x super-resolution LDM-VQ-4 (`bsr_sr`, BSR degradation; paper Sec. 4.4): 169M total.

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion models/ldm/bsr_sr/config.yaml
Parameters: 169M = 113.6M U-Net + 55.3M VQ-f4 first stage.

  python -m ldm_jax.summary --config configs/paper/bsr_sr.py [--json]

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
    c.name = "bsr_sr"
    c.reference = "models/ldm/bsr_sr/config.yaml"
    c.model = dict(
        conditioning_key="concat",
        first_stage=presets.first_stage("vq_f4"),
        unet=dict(
            image_size=64,
            in_channels=6,  # z_t (3) + the low-resolution image (3)
            out_channels=3,
            model_channels=160,
            attention_resolutions=(16, 8),
            num_res_blocks=2,
            channel_mult=(1, 2, 2, 4),
            num_head_channels=32,
        ),
        cond_stage=dict(kind="identity"),
    )
    c.diffusion = presets.diffusion("ldm", beta_end=0.0155)
    c.latent = dict(image_size=64, channels=3)
    c.data = dict(name="open_images_v4", image_size=256, channels=3)
    return experiment.finalize(c, arg)
