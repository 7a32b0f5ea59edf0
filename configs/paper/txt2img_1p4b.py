"""Text-to-image LDM-KL-8 on LAION-400M (`txt2img-1p4B-eval`; paper Sec. 4.3, 1.45B parameters).

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion configs/latent-diffusion/txt2img-1p4B-eval.yaml
Parameters: 1.45B in total: U-Net + the 32-layer, 1280-wide BERT-like transformer (+ KL-f8).

  python -m ldm_jax.summary --config configs/paper/txt2img_1p4b.py [--json]

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
    c.name = "txt2img_1p4b"
    c.reference = "configs/latent-diffusion/txt2img-1p4B-eval.yaml"
    c.model = dict(
        conditioning_key="crossattn",
        first_stage=presets.first_stage("kl_f8"),
        unet=presets.unet("sd_v1", context_dim=1280),
        cond_stage=dict(kind="bert", n_embed=1280, n_layer=32, vocab_size=30522, max_seq_len=77),
    )
    c.diffusion = presets.diffusion("sd")
    c.latent = dict(image_size=32, channels=4)
    c.data = dict(name="laion400m", image_size=256, channels=3)
    return experiment.finalize(c, arg)
