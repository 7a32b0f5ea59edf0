"""The VQ regulariser: nearest-codebook quantisation with a straight-through gradient.

As the reference `VectorQuantizer2` (taming-transformers) with plain indices (no `remap`):
for each latent vector z, k = argmin_j ||z - e_j||^2, z_q = e_k, and the gradient passes straight
through z_q to z. The codebook/commitment loss is, in the reference's default (legacy) form,

  loss = mean((sg[z_q] - z)^2) + beta * mean((z_q - sg[z])^2),

and with `legacy=False` the beta moves to the first (commitment) term.
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
    """

    quant: jax.Array
    loss: jax.Array
    indices: jax.Array


class VectorQuantizer(nn.Module):
    """Codebook of `n_embed` vectors of width `embed_dim` (parameter `embedding/embedding`).

    Attributes:
      n_embed: number of codes.
      embed_dim: code width (the channels of the latent being quantised).
      beta: commitment weight (0.25 in the paper's VQ models).
      legacy: the reference's default loss form (beta on the codebook term).
    """

    n_embed: int
    embed_dim: int
    beta: float = 0.25
    legacy: bool = True

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
        """z [B, h, w, e_dim] -> `Quantized` (straight-through quant, loss, indices)."""
        indices = self.nearest(z)
        z_q = self.get_codebook_entry(indices).astype(z.dtype)
        sg = jax.lax.stop_gradient
        z32, zq32 = z.astype(jnp.float32), z_q.astype(jnp.float32)
        commit = jnp.mean((sg(zq32) - z32) ** 2)  # pulls the encoder towards its code
        codebook = jnp.mean((zq32 - sg(z32)) ** 2)  # pulls the code towards the encoder
        loss = commit + self.beta * codebook if self.legacy else self.beta * commit + codebook
        quant = z + sg(z_q - z)
        return Quantized(quant=quant, loss=loss, indices=indices)
