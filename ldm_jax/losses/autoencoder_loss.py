"""Reconstruction + KL loss of the KL autoencoder (the paper's loss without LPIPS and GAN).

As in the reference `LPIPSWithDiscriminator`, the reconstruction term is summed over pixels and
the KL term over latent dimensions, per example; the KL weight is therefore tiny (1e-6).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ldm_jax.models.autoencoder import DiagonalGaussian


def kl_autoencoder_loss(
    x: jax.Array,
    x_rec: jax.Array,
    posterior: DiagonalGaussian,
    kl_weight: float,
    l2_weight: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Per-example loss sum|x - x~| + l2_weight * sum(x - x~)^2 + kl_weight * KL(q(z|x) || N(0, I)).

    Args:
      x: [B, H, W, C] targets in [-1, 1].
      x_rec: [B, H, W, C] reconstructions.
      posterior: q(z|x).
      kl_weight: weight of the KL term.
      l2_weight: weight of an extra squared-error term (0 in the paper).

    Returns:
      loss [B] float32 and a dict of per-example terms ([B] each).
    """
    diff = x_rec.astype(jnp.float32) - x.astype(jnp.float32)  # [B, H, W, C]
    l1 = jnp.sum(jnp.abs(diff), axis=(1, 2, 3))
    l2 = jnp.sum(diff**2, axis=(1, 2, 3))
    kl = posterior.kl()
    loss = l1 + l2_weight * l2 + kl_weight * kl
    mse = jnp.mean(diff**2, axis=(1, 2, 3))
    return loss, {"l1": l1, "kl": kl, "mse": mse}


def psnr(x: jax.Array, x_rec: jax.Array) -> jax.Array:
    """Peak signal-to-noise ratio in dB for images in [-1, 1] (peak-to-peak 2). Returns [B]."""
    mse = jnp.mean((jnp.clip(x_rec, -1, 1) - x) ** 2, axis=tuple(range(1, x.ndim)))
    return 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-12))
