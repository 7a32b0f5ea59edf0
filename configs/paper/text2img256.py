"""Text-to-image LDM-VQ-4 (`models/ldm/text2img256`): BERT-like 32-layer, 640-wide tau_theta.

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion models/ldm/text2img256/config.yaml
Parameters: (released model; no figure in the paper).

  python -m ldm_jax.summary --config configs/paper/text2img256.py [--json]

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
    c.name = "text2img256"
    c.reference = "models/ldm/text2img256/config.yaml"
    c.model = dict(
        conditioning_key="crossattn",
        first_stage=presets.first_stage("vq_f4"),
        unet=presets.unet("cin256_v2", drop=("num_heads",), num_head_channels=32, context_dim=640),
        cond_stage=dict(kind="bert", n_embed=640, n_layer=32, vocab_size=30522, max_seq_len=77),
    )
    c.diffusion = presets.diffusion("ldm")
    c.latent = dict(image_size=64, channels=3)
    c.data = dict(name="previews", image_size=256, channels=3)
    return experiment.finalize(c, arg)
