"""f sweep, f = 1: LDM-1, unconditional diffusion in pixel space on 32x32 Noto emoji (RGB).

  python -m ldm_jax.train --config configs/autoencoders/emoji/identity_ldm1.py \
      --workdir runs/emoji_ldm1
  python -m ldm_jax.sample --workdir runs/emoji_ldm1 --num 16 --out emoji_ldm1.png

The Fashion-MNIST LDM-1 (`../fashion_mnist/identity_ldm1.py`: the identity first stage, no
stage 1, the same U-Net, schedule and training length) on the emoji dataset: three channels in
and out, and unconditional (the emoji have captions, not classes), so the U-Net's transformers
self-attend and sampling is unguided. The end-of-training grid holds `sample.per_class` rows.

Runtime: as the Fashion-MNIST LDM-1 (the channels change only the first and last convolutions).
Result: not measured yet (checked for 4 steps: it trains and writes its grid).

`:tiny` is the seconds-long variant for tests (3 steps on synthetic shapes).
"""

from __future__ import annotations

import os

import ml_collections

from ldm_jax.config import experiment
from ldm_jax.config.files import load_config_file

BASE = os.path.join(os.path.dirname(__file__), "..", "fashion_mnist", "identity_ldm1.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The experiment config; `arg`: None or "tiny"."""
    c = load_config_file(BASE)
    c.name = "noto_emoji_identity_ldm1"
    c.data.update(name="noto_emoji", image_size=32, channels=3, num_classes=0)
    c.model.first_stage.in_channels = 3
    c.model.unet.update(in_channels=3, out_channels=3, context_dim=None)
    c.model.cond_stage = dict(kind="none")
    c.model.conditioning_key = None
    c.sample.update(guidance_scale=1.0, per_class=8)
    return experiment.finalize(c, arg)
