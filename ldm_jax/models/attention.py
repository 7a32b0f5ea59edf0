"""Attention layers: the autoencoder's single-head `AttnBlock` and the U-Net's
`SpatialTransformer` (self-attention, cross-attention to tau_theta(y), GEGLU feed-forward).

Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V, with the softmax in float32.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.models import attention_kernels
from ldm_jax.models.dense_grad import dense_dot_general
from ldm_jax.models.layers import Dtype, GroupNorm32, conv1x1
from ldm_jax.models.partitioning import EMBED, HEADS, MLP, conv_kernel, dense_kernel


def dot_product_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, implementation: str = "auto"
) -> jax.Array:
    """Multi-head attention core (see `attention_kernels` for the implementations).

    Args:
      q: [B, Lq, heads, d] queries.
      k: [B, Lk, heads, d] keys.
      v: [B, Lk, heads, d] values.
      implementation: "auto" (chosen per backend and size) or one of
        `attention_kernels.IMPLEMENTATIONS`.

    Returns:
      [B, Lq, heads, d], softmax computed in float32.
    """
    return attention_kernels.attention(q, k, v, implementation)


def _dense_layer(features: int, **kwargs) -> nn.Dense:
    """`nn.Dense` with `dense_grad.dense_dot_general` (faster kernel gradient on XLA:CPU)."""
    return nn.Dense(features, dot_general=dense_dot_general, **kwargs)


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections (the autoencoder's)."""

    num_groups: int = 32
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        y = GroupNorm32(self.num_groups, 1e-6, name="norm")(x)
        q, k, v = (conv1x1(c, n, self.dtype)(y).reshape(b, h * w, 1, c) for n in ("q", "k", "v"))
        out = dot_product_attention(q, k, v).reshape(b, h, w, c)
        return x + conv1x1(c, "proj_out", self.dtype)(out)


class CrossAttention(nn.Module):
    """Multi-head attention; self-attention when `context` is None.

    Attributes:
      heads: number of heads.
      dim_head: width of each head.
    """

    heads: int
    dim_head: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, context: jax.Array | None = None, deterministic: bool = True
    ) -> jax.Array:
        context = x if context is None else context  # [B, Lk, Dc]
        inner = self.heads * self.dim_head
        kernel = dense_kernel((EMBED, HEADS))
        dense = lambda n: _dense_layer(
            inner, use_bias=False, dtype=self.dtype, kernel_init=kernel, name=n
        )
        split = lambda t: t.reshape(t.shape[0], t.shape[1], self.heads, self.dim_head)
        q, k, v = (
            split(dense("to_q")(x)),
            split(dense("to_k")(context)),
            split(dense("to_v")(context)),
        )
        out = dot_product_attention(q, k, v).reshape(
            x.shape[0], x.shape[1], inner
        )  # [B, Lq, inner]
        out = _dense_layer(
            x.shape[-1], dtype=self.dtype, kernel_init=dense_kernel((HEADS, EMBED)), name="to_out_0"
        )(out)
        return nn.Dropout(self.dropout)(out, deterministic=deterministic)


@jax.checkpoint
def geglu(h: jax.Array) -> jax.Array:
    """GEGLU, a * gelu(gate) for h = [a, gate] split on the last axis; [..., 2n] -> [..., n].

    Rematerialised: the backward pass recomputes gelu from h instead of keeping the exact
    GELU's intermediates (erfc, exp, products), about three activations of [..., n] per
    feed-forward layer. With `gradient_order.early_param_grads` this took the issue-12 U-Net
    train step's XLA temporaries from 915 to 720 MB (2026-12-07).
    """
    a, gate = jnp.split(h, 2, axis=-1)
    return a * jax.nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
    """GEGLU feed-forward: Dense(dim -> 2*inner), x * gelu(gate), Dense(inner -> dim)."""

    mult: int = 4
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        dim = x.shape[-1]
        inner = dim * self.mult
        h = _dense_layer(
            2 * inner, dtype=self.dtype, kernel_init=dense_kernel(), name="net_0_proj"
        )(x)
        h = geglu(h)  # [..., inner]
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        return _dense_layer(
            dim, dtype=self.dtype, kernel_init=dense_kernel((MLP, EMBED)), name="net_2"
        )(h)


class BasicTransformerBlock(nn.Module):
    """Pre-norm block: self-attention, cross-attention to the context, feed-forward."""

    heads: int
    dim_head: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, context: jax.Array | None, deterministic: bool = True
    ) -> jax.Array:
        norm = lambda n: nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name=n)
        attn = lambda n: CrossAttention(self.heads, self.dim_head, self.dropout, self.dtype, name=n)
        x = x + attn("attn1")(norm("norm1")(x).astype(x.dtype), None, deterministic)
        x = x + attn("attn2")(norm("norm2")(x).astype(x.dtype), context, deterministic)
        ff = FeedForward(dropout=self.dropout, dtype=self.dtype, name="ff")
        return x + ff(norm("norm3")(x).astype(x.dtype), deterministic)


class SpatialTransformer(nn.Module):
    """Transformer over the H*W positions of a feature map, conditioned on `context`.

    Attributes:
      heads: attention heads.
      dim_head: width per head; inner width is heads * dim_head.
      depth: number of BasicTransformerBlocks.
      use_linear: Dense instead of 1x1-conv projections in/out (Stable Diffusion v2 style).
    """

    heads: int
    dim_head: int
    depth: int = 1
    dropout: float = 0.0
    use_linear: bool = False
    num_groups: int = 32
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, context: jax.Array | None = None, deterministic: bool = True
    ) -> jax.Array:
        b, h, w, c = x.shape
        inner = self.heads * self.dim_head
        proj = (
            (
                lambda f, n: _dense_layer(
                    f, dtype=self.dtype, kernel_init=dense_kernel((EMBED, HEADS)), name=n
                )
            )
            if self.use_linear
            else (lambda f, n: conv1x1(f, n, self.dtype))
        )
        y = GroupNorm32(self.num_groups, 1e-6, name="norm")(x)
        y = proj(inner, "proj_in")(y).reshape(b, h * w, inner)  # [B, HW, inner]
        for i in range(self.depth):
            y = BasicTransformerBlock(
                self.heads, self.dim_head, self.dropout, self.dtype, name=f"transformer_blocks_{i}"
            )(y, context, deterministic)
        y = y.reshape(b, h, w, inner)
        zero = nn.initializers.zeros
        if self.use_linear:
            out = _dense_layer(
                c, dtype=self.dtype, kernel_init=dense_kernel((HEADS, EMBED), zero), name="proj_out"
            )(y)
        else:
            out = nn.Conv(
                c, (1, 1), dtype=self.dtype, kernel_init=conv_kernel(init=zero), name="proj_out"
            )(y)
        return x + out


class AttentionBlock(nn.Module):
    """The U-Net's self-attention block without a transformer (`use_spatial_transformer=False`).

    GroupNorm, a kernel-1 1-D convolution `qkv` over the H*W positions producing 3*C channels,
    multi-head attention, and a zero-initialised kernel-1 `proj_out`, added to the input.

    The `qkv` channels are read in one of two orders, as the reference code:
      * legacy (`QKVAttentionLegacy`, the default): split heads first, i.e. the 3*C channels are
        laid out [head][q|k|v][d];
      * new order (`QKVAttention`, `use_new_attention_order=True`): split q/k/v first, i.e.
        [q|k|v][head][d].

    Attributes:
      num_heads: attention heads; C must be divisible by it.
      use_new_attention_order: the `QKVAttention` channel order instead of the legacy one.
    """

    num_heads: int = 1
    use_new_attention_order: bool = False
    num_groups: int = 32
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        if c % self.num_heads:
            raise ValueError(f"AttentionBlock: {c} channels not divisible by {self.num_heads}.")
        d = c // self.num_heads
        y = GroupNorm32(self.num_groups, 1e-5, name="norm")(x).reshape(b, h * w, c)  # [B, T, C]
        qkv = nn.Conv(3 * c, (1,), dtype=self.dtype, kernel_init=conv_kernel(1), name="qkv")(
            y
        )  # [B, T, 3C]
        if self.use_new_attention_order:
            qkv = qkv.reshape(b, h * w, 3, self.num_heads, d)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        else:
            qkv = qkv.reshape(b, h * w, self.num_heads, 3, d)
            q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
        out = dot_product_attention(q, k, v).reshape(b, h * w, c)  # [B, T, C]
        zero = nn.initializers.zeros
        out = nn.Conv(c, (1,), dtype=self.dtype, kernel_init=conv_kernel(1, zero), name="proj_out")(
            out
        )
        return x + out.reshape(b, h, w, c)


class LinAttnBlock(nn.Module):
    """The autoencoder's `attn_type="linear"` block: one-head linear attention, not residual.

    GroupNorm is not applied (as the reference `LinAttnBlock`); `to_qkv` is a bias-free 1x1
    conv to 3*C channels, the keys are softmax-normalised over positions, and `to_out` maps back.
    """

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        qkv = nn.Conv(
            3 * c,
            (1, 1),
            use_bias=False,
            dtype=self.dtype,
            kernel_init=conv_kernel(),
            name="to_qkv",
        )(x)
        q, k, v = jnp.split(qkv.reshape(b, h * w, 3 * c), 3, axis=-1)  # each [B, T, C]
        k = jax.nn.softmax(k.astype(jnp.float32), axis=1).astype(v.dtype)  # over positions
        context = jnp.einsum("btd,bte->bde", k, v)  # [B, C, C]
        out = jnp.einsum("bde,btd->bte", context, q).reshape(b, h, w, c)
        return conv1x1(c, "to_out", self.dtype)(out)
