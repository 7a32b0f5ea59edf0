"""tau_theta encoders: map a condition y to cross-attention tokens [B, L, context_dim]."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.models.partitioning import conv_kernel, embedding_table


class ClassEmbedder(nn.Module):
    """Class label -> one context token, with an extra learned "null" class for guidance.

    Label `num_classes` (one past the last real class) is the null class used for the
    unconditional branch of classifier-free guidance. With `add_null_class=False` the table has
    exactly `num_classes` rows, as the reference `ClassEmbedder(n_classes=...)` (e.g. the paper's
    cin256 model: 1000 rows; its cin256-v2 has n_classes=1001, i.e. 1000 classes + null).

    Attributes:
      num_classes: number of real classes.
      embed_dim: token width (the U-Net's `context_dim`).
      add_null_class: append the learned null class.
    """

    num_classes: int
    embed_dim: int
    add_null_class: bool = True

    @property
    def null_class(self) -> int:
        if not self.add_null_class:
            raise ValueError("ClassEmbedder: built without a null class (add_null_class=False).")
        return self.num_classes

    @nn.compact
    def __call__(self, labels: jax.Array) -> jax.Array:
        """labels [B] int in [0, num_classes] -> tokens [B, 1, embed_dim] float32."""
        rows = self.num_classes + int(self.add_null_class)
        table = nn.Embed(rows, self.embed_dim, embedding_init=embedding_table(), name="embedding")
        return table(labels.astype(jnp.int32))[:, None, :]


def drop_labels(rng: jax.Array, labels: jax.Array, drop_prob: float, null_class: int) -> jax.Array:
    """Replaces each label by the null class with probability `drop_prob` (guidance training)."""
    keep = jax.random.uniform(rng, labels.shape) >= drop_prob
    return jnp.where(keep, labels, null_class)


class SpatialRescaler(nn.Module):
    """Resizes a map condition (e.g. a one-hot semantic map) to the latent grid.

    `n_stages` rescalings by `multiplier` (bilinear, or nearest, ...), then an optional bias-free
    (by default) 1x1 conv `channel_mapper` to `out_channels` (the reference `SpatialRescaler`).

    Attributes:
      n_stages: number of rescaling steps (0 keeps the size).
      method: "bilinear", "nearest", "bicubic", ... (jax.image.resize names; "linear" and
        "trilinear" map to "linear").
      multiplier: scale per stage (0.5 halves each side).
      out_channels: channels after the 1x1 remap; None: no remap.
      bias: whether the remap conv has a bias.
    """

    n_stages: int = 1
    method: str = "bilinear"
    multiplier: float = 0.5
    out_channels: int | None = None
    bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x [B, H, W, C] -> [B, H * m**n, W * m**n, out_channels or C] float32."""
        if self.n_stages < 0:
            raise ValueError("SpatialRescaler: n_stages must be >= 0.")
        method = {"bilinear": "linear", "trilinear": "linear"}.get(self.method, self.method)
        x = x.astype(jnp.float32)
        for _ in range(self.n_stages):
            b, h, w, c = x.shape
            oh, ow = int(h * self.multiplier), int(w * self.multiplier)
            if method == "nearest":
                # PyTorch's legacy "nearest": source index floor(i / multiplier).
                rows = jnp.minimum(jnp.floor(jnp.arange(oh) / self.multiplier), h - 1)
                cols = jnp.minimum(jnp.floor(jnp.arange(ow) / self.multiplier), w - 1)
                x = x[:, rows.astype(jnp.int32)][:, :, cols.astype(jnp.int32)]
            else:
                # interpolate(scale_factor=...): half-pixel centres, no anti-aliasing.
                x = jax.image.resize(x, (b, oh, ow, c), method=method, antialias=False)
        if self.out_channels is not None:
            x = nn.Conv(
                self.out_channels,
                (1, 1),
                use_bias=self.bias,
                kernel_init=conv_kernel(),
                name="channel_mapper",
            )(x)
        return x


class IdentityEncoder(nn.Module):
    """tau_theta = identity (the reference `torch.nn.Identity`, e.g. for super-resolution)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return x
