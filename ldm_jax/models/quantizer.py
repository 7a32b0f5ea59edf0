"""The VQ regulariser: nearest-codebook quantisation with a straight-through gradient.

As the reference `VectorQuantizer2` (taming-transformers) with plain indices (no `remap`):
for each latent vector z, k = argmin_j ||z - e_j||^2, z_q = e_k, and the gradient passes straight
through z_q to z. The codebook/commitment loss is, in the reference's default (legacy) form,

  loss = mean((z - sg[z_q])^2) + beta * mean((z_q - sg[z])^2),

and with `legacy=False` the beta moves to the first (commitment) term, as in the VQ-VAE paper.

With `ema=True` the codebook is not learned by gradient: the loss is the commitment term alone,
beta * mean((z - sg[z_q])^2), so the codebook parameter receives an exactly zero gradient and the
trainer overwrites it every step with `ldm_jax.losses.vq_codebook.ema_update` (see there).
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.models.partitioning import embedding_table


@flax.struct.dataclass
class Quantized:
    """Output of `VectorQuantizer`.

    Attributes:
      quant: [B, h, w, e_dim] quantised latents (straight-through: gradients flow to z).
      loss: [] scalar codebook + commitment loss (float32).
      indices: [B, h, w] int32 codebook indices.
      counts: [n_embed] float32 number of vectors assigned to each code in this call (for
        codebook usage and perplexity; see `ldm_jax.losses.vq_codebook.usage_from_counts`).
        None only where a caller builds a `Quantized` itself.
    """

    quant: jax.Array
    loss: jax.Array
    indices: jax.Array
    counts: jax.Array | None = None


def code_counts(indices: jax.Array, n_embed: int) -> jax.Array:
    """How many entries of `indices` ([...] int) fall on each code: [n_embed] float32.

    Under `jit` with a batch-sharded `indices` the count is over the whole (global) array.
    """
    flat = indices.reshape(-1)
    return jnp.zeros((n_embed,), jnp.float32).at[flat].add(1.0)


def vq_loss(
    z: jax.Array, z_q: jax.Array, beta: float, legacy: bool = True, ema: bool = False
) -> jax.Array:
    """The scalar VQ loss (module docstring) in float32.

    Args:
      z: [..., e_dim] the encoder's vectors.
      z_q: [..., e_dim] their codes (gathered from the codebook, not straight-through).
      beta: commitment weight.
      legacy: beta on the codebook term (the reference's default) instead of the commitment.
      ema: the commitment term alone, beta * mean((z - sg[z_q])^2) (the codebook gets no gradient).
    """
    sg = jax.lax.stop_gradient
    z32, zq32 = z.astype(jnp.float32), z_q.astype(jnp.float32)
    commit = jnp.mean((z32 - sg(zq32)) ** 2)  # pulls the encoder towards its code
    if ema:
        return beta * commit
    codebook = jnp.mean((zq32 - sg(z32)) ** 2)  # pulls the code towards the encoder
    return commit + beta * codebook if legacy else beta * commit + codebook


class VectorQuantizer(nn.Module):
    """Codebook of `n_embed` vectors of width `embed_dim` (parameter `embedding/embedding`).

    Attributes:
      n_embed: number of codes.
      embed_dim: code width (the channels of the latent being quantised).
      beta: commitment weight (0.25 in the paper's VQ models).
      legacy: the reference's default loss form (beta on the codebook term).
      ema: the codebook follows an exponential moving average updated outside the gradient step;
        the loss is then beta * commitment only and `legacy` is ignored.
    """

    n_embed: int
    embed_dim: int
    beta: float = 0.25
    legacy: bool = True
    ema: bool = False

    def setup(self):
        bound = 1.0 / self.n_embed
        init = lambda key, shape, dtype=jnp.float32: jax.random.uniform(
            key, shape, dtype, -bound, bound
        )
        self.embedding = nn.Embed(
            self.n_embed, self.embed_dim, embedding_init=embedding_table(init)
        )

    def nearest(self, z: jax.Array) -> jax.Array:
        """Index of the nearest code for each vector. z [..., e_dim] -> [...] int32."""
        codes = self.embedding.embedding.astype(jnp.float32)  # [n, e]
        flat = z.reshape(-1, self.embed_dim).astype(jnp.float32)  # [N, e]
        dist = (
            jnp.sum(flat**2, axis=1, keepdims=True)
            + jnp.sum(codes**2, axis=1)[None]
            - 2.0 * flat @ codes.T
        )  # [N, n]
        return jnp.argmin(dist, axis=1).astype(jnp.int32).reshape(z.shape[:-1])

    def get_codebook_entry(self, indices: jax.Array) -> jax.Array:
        """indices [...] -> codes [..., e_dim]."""
        return self.embedding(indices)

    def __call__(self, z: jax.Array) -> Quantized:
        """z [B, h, w, e_dim] -> `Quantized` (straight-through quant, loss, indices, counts)."""
        indices = self.nearest(z)
        z_q = self.get_codebook_entry(indices).astype(z.dtype)
        loss = vq_loss(z, z_q, self.beta, self.legacy, self.ema)
        quant = z + jax.lax.stop_gradient(z_q - z)
        counts = code_counts(indices, self.n_embed)
        return Quantized(quant=quant, loss=loss, indices=indices, counts=counts)
