"""tau_theta for text: the paper's BERT-like transformer (`BERTEmbedder` / `TransformerEmbedder`).

The reference wraps an x-transformers `TransformerWrapper` around an `Encoder`:
token embedding + learned absolute positional embedding, `depth` pre-norm blocks of
[LayerNorm -> multi-head self-attention (8 heads of 64, bias-free q/k/v, biased output)] and
[LayerNorm -> Linear(d, 4d) -> GELU -> Linear(4d, d)], each residual, and a final LayerNorm.
The embeddings (not logits) are the cross-attention context [B, L, n_embed]. The wrapper also
owns an (unused for embeddings) `to_logits` projection, whose parameters we create too so the
parameter tree and count match the reference checkpoints.

Parameter names mirror the reference: `transformer/token_emb`, `transformer/pos_emb/emb`,
`transformer/attn_layers/layers_{k}_{0,1}` (k even: attention, odd: feed-forward),
`transformer/norm`, `transformer/to_logits`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.models.attention import dot_product_attention
from ldm_jax.models.layers import Dtype
from ldm_jax.models.partitioning import EMBED, HEADS, MLP, VOCAB, dense_kernel, embedding_table

_normal02 = nn.initializers.normal(stddev=0.02)


class XAttention(nn.Module):
    """x-transformers self-attention: heads * dim_head inner width, no q/k/v biases."""

    heads: int = 8
    dim_head: int = 64
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        b, n, d = x.shape
        inner = self.heads * self.dim_head
        kernel = dense_kernel((EMBED, HEADS))
        proj = lambda name: nn.Dense(
            inner, use_bias=False, dtype=self.dtype, kernel_init=kernel, name=name
        )(x)
        q, k, v = (
            proj(nm).reshape(b, n, self.heads, self.dim_head) for nm in ("to_q", "to_k", "to_v")
        )
        out = dot_product_attention(q, k, v).reshape(b, n, inner)  # [B, N, inner]
        out = nn.Dropout(self.dropout)(out, deterministic=deterministic)
        return nn.Dense(
            d, dtype=self.dtype, kernel_init=dense_kernel((HEADS, EMBED)), name="to_out"
        )(out)


class XFeedForward(nn.Module):
    """Linear(d, mult*d) -> exact GELU -> dropout -> Linear(mult*d, d)."""

    mult: int = 4
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        d = x.shape[-1]
        h = nn.Dense(d * self.mult, dtype=self.dtype, kernel_init=dense_kernel(), name="net_0_0")(x)
        h = nn.Dropout(self.dropout)(jax.nn.gelu(h, approximate=False), deterministic=deterministic)
        return nn.Dense(d, dtype=self.dtype, kernel_init=dense_kernel((MLP, EMBED)), name="net_2")(
            h
        )


class AttentionLayers(nn.Module):
    """`depth` pre-norm residual (attention, feed-forward) pairs: layers 'a', 'f', 'a', 'f', ..."""

    depth: int
    heads: int = 8
    dim_head: int = 64
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        for i in range(2 * self.depth):
            norm = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name=f"layers_{i}_0")
            y = norm(x).astype(x.dtype)
            if i % 2 == 0:
                y = XAttention(self.heads, self.dim_head, dtype=self.dtype, name=f"layers_{i}_1")(
                    y, deterministic
                )
            else:
                y = XFeedForward(dtype=self.dtype, name=f"layers_{i}_1")(y, deterministic)
            x = x + y
        return x


class AbsolutePositionalEmbedding(nn.Module):
    """Learned positions (parameter `emb/embedding` [max_seq_len, dim])."""

    max_seq_len: int
    dim: int

    @nn.compact
    def __call__(self, n: int) -> jax.Array:
        """-> [1, n, dim] embeddings of positions 0..n-1."""
        emb = nn.Embed(
            self.max_seq_len, self.dim, embedding_init=embedding_table(_normal02), name="emb"
        )
        return emb(jnp.arange(n))[None]


class TransformerWrapper(nn.Module):
    """Token + positional embedding, `AttentionLayers`, final LayerNorm (x-transformers)."""

    num_tokens: int
    max_seq_len: int
    dim: int
    depth: int
    heads: int = 8
    dim_head: int = 64
    emb_dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, tokens: jax.Array, return_embeddings: bool = True, deterministic: bool = True
    ) -> jax.Array:
        """tokens [B, L] int (L <= max_seq_len) -> embeddings [B, L, dim] (or logits)."""
        n = tokens.shape[1]
        if n > self.max_seq_len:
            raise ValueError(f"TransformerWrapper: {n} tokens > max_seq_len {self.max_seq_len}.")
        x = nn.Embed(
            self.num_tokens, self.dim, embedding_init=embedding_table(_normal02), name="token_emb"
        )(tokens)
        x = x + AbsolutePositionalEmbedding(self.max_seq_len, self.dim, name="pos_emb")(n)
        x = nn.Dropout(self.emb_dropout)(x, deterministic=deterministic).astype(self.dtype)
        x = AttentionLayers(self.depth, self.heads, self.dim_head, self.dtype, name="attn_layers")(
            x, deterministic
        )
        x = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name="norm")(x)
        to_logits = nn.Dense(
            self.num_tokens,
            dtype=self.dtype,
            kernel_init=dense_kernel((EMBED, VOCAB)),
            name="to_logits",
        )
        if not return_embeddings:
            return to_logits(x.astype(self.dtype)).astype(jnp.float32)
        if self.is_initializing():
            to_logits(x[:, :1].astype(self.dtype))  # the reference owns these weights
        return x.astype(jnp.float32)


class BERTEmbedder(nn.Module):
    """The paper's text tau_theta: token ids [B, L] -> context [B, L, n_embed] float32.

    Tokenise captions with `WordPieceTokenizer` (bert-base-uncased vocabulary, 77 tokens) or,
    as the layout model (`use_tokenizer: false`), feed ids directly.

    Attributes:
      n_embed: width of the transformer and of the context tokens.
      n_layer: number of (attention, feed-forward) blocks.
      vocab_size: 30522 for bert-base-uncased.
      max_seq_len: positional embedding length (77).
    """

    n_embed: int
    n_layer: int
    vocab_size: int = 30522
    max_seq_len: int = 77
    embedding_dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, deterministic: bool = True) -> jax.Array:
        transformer = TransformerWrapper(
            self.vocab_size,
            self.max_seq_len,
            self.n_embed,
            self.n_layer,
            emb_dropout=self.embedding_dropout,
            dtype=self.dtype,
            name="transformer",
        )
        return transformer(tokens.astype(jnp.int32), True, deterministic)
