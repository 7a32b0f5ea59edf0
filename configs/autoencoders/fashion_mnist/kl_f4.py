"""f sweep, first stage: KL autoencoder, f=4, on 32x32 Fashion-MNIST.

  python -m ldm_jax.train --config configs/autoencoders/fashion_mnist/kl_f4.py \
      --workdir runs/ae_fm_kl_f4
  python -m ldm_jax.evaluate --workdir runs/ae_fm_kl_f4 --what reconstruction

Trained with the paper's loss (L1 + LPIPS-VGG + PatchGAN from half-way, adaptive weight); the
network and loss settings are in `ldm_jax/config/small_first_stages.py`, measured results and
times of the whole sweep in `experiments/autoencoders/README.md`. `:tiny` is the seconds-long
variant for tests.
"""

from __future__ import annotations

import ml_collections

from ldm_jax.config import small_first_stages


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The experiment config; `arg`: None or "tiny"."""
    return small_first_stages.get_config("kl", 4, "fashion_mnist", arg)
