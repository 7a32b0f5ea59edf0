"""The adversarial terms of the paper's first-stage loss (taming-transformers / latent-diffusion).

The discriminator losses and the generator loss are per example: each averages the logits of one
example's patch map ([B, H', W', 1] -> [B]), so their mean over the batch is the reference's
mean over all logits. Everything is computed in float32.

How the reference combines them (`LPIPSWithDiscriminator`, `VQLPIPSWithDiscriminator`):

  autoencoder: nll + d_weight * adopt_weight(disc_factor, step, disc_start) * g_loss
               with d_weight = adaptive_weight(grad nll, grad g_loss, disc_weight), both gradients
               taken with respect to the decoder's last convolution kernel;
  discriminator: adopt_weight(disc_factor, step, disc_start) * d_loss(logits_real, logits_fake).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

ADAPTIVE_EPS = 1e-4
ADAPTIVE_MAX = 1e4


def _per_example_mean(x: jax.Array) -> jax.Array:
    """Mean over all axes but the first, in float32: [B, ...] -> [B]."""
    return jnp.mean(x.astype(jnp.float32), axis=tuple(range(1, x.ndim)))


def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    """Hinge discriminator loss 0.5 * (mean relu(1 - real) + mean relu(1 + fake)), per example.

    Args:
      logits_real: [B, ...] discriminator logits on real images.
      logits_fake: [B, ...] discriminator logits on reconstructions (same B).

    Returns:
      [B] float32.
    """
    real = _per_example_mean(jax.nn.relu(1.0 - logits_real.astype(jnp.float32)))
    fake = _per_example_mean(jax.nn.relu(1.0 + logits_fake.astype(jnp.float32)))
    return 0.5 * (real + fake)


def vanilla_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    """Non-saturating GAN discriminator loss 0.5 * (mean softplus(-real) + mean softplus(fake)).

    This is the binary cross-entropy with label 1 on real and 0 on fake logits.

    Args:
      logits_real: [B, ...] discriminator logits on real images.
      logits_fake: [B, ...] discriminator logits on reconstructions (same B).

    Returns:
      [B] float32.
    """
    real = _per_example_mean(jax.nn.softplus(-logits_real.astype(jnp.float32)))
    fake = _per_example_mean(jax.nn.softplus(logits_fake.astype(jnp.float32)))
    return 0.5 * (real + fake)


D_LOSSES = {"hinge": hinge_d_loss, "vanilla": vanilla_d_loss}


def generator_loss(logits_fake: jax.Array) -> jax.Array:
    """The reference's generator loss -mean(logits_fake), per example ([B, ...] -> [B] float32).

    The reference uses it with both discriminator losses.
    """
    return -_per_example_mean(logits_fake)


def adopt_weight(
    weight: jax.Array | float, step: jax.Array | int, threshold: int, value: float = 0.0
) -> jax.Array:
    """`value` while step < threshold, else `weight` (the GAN is off before `disc_start`).

    `jnp.where`, so `step` may be traced inside `jit` without recompiling.

    Returns:
      [] float32.
    """
    return jnp.where(
        jnp.asarray(step) < threshold,
        jnp.asarray(value, jnp.float32),
        jnp.asarray(weight, jnp.float32),
    )


def _global_norm(tree: Any) -> jax.Array:
    """Euclidean norm of all entries of a pytree of arrays (an array is a one-leaf tree)."""
    leaves = jax.tree.leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(a.astype(jnp.float32))) for a in leaves))


def adaptive_weight(nll_grad: Any, g_grad: Any, disc_weight: float | jax.Array) -> jax.Array:
    """The adaptive GAN weight lambda = |grad nll| / (|grad g| + 1e-4), clamped, times disc_weight.

    As the reference's `calculate_adaptive_weight`: the norms are Euclidean norms over all entries,
    the ratio is clamped to [0, 1e4] and detached (`stop_gradient`), then multiplied by
    `disc_weight`. It balances the two terms so that their gradients at the decoder's output have
    similar size.

    Computing the gradients is the caller's job: take `jax.grad` of the reconstruction loss (nll)
    and of the generator loss with respect to the decoder's last convolution kernel (the reference
    passes `decoder.conv_out.weight` only, no bias). Inside a loss that is itself differentiated,
    the stop-gradient here means the outer gradient treats lambda as a constant, as in PyTorch.

    Args:
      nll_grad: d nll / d kernel, an array (e.g. [3, 3, C, out]) or a pytree of arrays.
      g_grad: d g_loss / d kernel, same structure.
      disc_weight: the config's `disc_weight` multiplier.

    Returns:
      [] float32.
    """
    ratio = _global_norm(nll_grad) / (_global_norm(g_grad) + ADAPTIVE_EPS)
    ratio = jax.lax.stop_gradient(jnp.clip(ratio, 0.0, ADAPTIVE_MAX))
    return ratio * jnp.asarray(disc_weight, jnp.float32)
