"""Text-to-image LDM-VQ-4 (`models/ldm/text2img256`): BERT-like 32-layer, 640-wide tau_theta.

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion models/ldm/text2img256/config.yaml
Parameters: (released model; no figure in the paper).

  python -m ldm_jax.summary --config configs/paper/text2img256.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
"""

from __future__ import annotations

import pathlib

import ml_collections

from ldm_jax.config.files import load_config_file

BASE = pathlib.Path(__file__).with_name("cin256_v2.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The model config: `BASE` (cin256-v2) with the differences below; takes no argument."""
    if arg:
        raise ValueError(f"Unknown config argument {arg!r}; this config takes none.")
    c = load_config_file(BASE)  # Same first stage, U-Net layout and schedule as cin256-v2.
    c.name = "text2img256"
    c.reference = "models/ldm/text2img256/config.yaml"
    unet = c.model.unet
    del unet["num_heads"]
    unet.num_head_channels = 32
    unet.context_dim = 640
    c.model.cond_stage = ml_collections.ConfigDict(
        dict(kind="bert", n_embed=640, n_layer=32, vocab_size=30522, max_seq_len=77)
    )
    c.data = ml_collections.ConfigDict(dict(name="previews", image_size=256, channels=3))
    return c
