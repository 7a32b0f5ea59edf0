"""tau_theta encoders: map a condition y to cross-attention tokens [B, L, context_dim]."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class ClassEmbedder(nn.Module):
    """Class label -> one context token, with an extra learned "null" class for guidance.

    Label `num_classes` (one past the last real class) is the null class used for the
    unconditional branch of classifier-free guidance.

    Attributes:
      num_classes: number of real classes.
      embed_dim: token width (the U-Net's `context_dim`).
    """

    num_classes: int
    embed_dim: int

    @property
    def null_class(self) -> int:
        return self.num_classes

    @nn.compact
    def __call__(self, labels: jax.Array) -> jax.Array:
        """labels [B] int in [0, num_classes] -> tokens [B, 1, embed_dim] float32."""
        table = nn.Embed(self.num_classes + 1, self.embed_dim, name="embedding")
        return table(labels.astype(jnp.int32))[:, None, :]


def drop_labels(rng: jax.Array, labels: jax.Array, drop_prob: float, null_class: int) -> jax.Array:
    """Replaces each label by the null class with probability `drop_prob` (guidance training)."""
    keep = jax.random.uniform(rng, labels.shape) >= drop_prob
    return jnp.where(keep, labels, null_class)
