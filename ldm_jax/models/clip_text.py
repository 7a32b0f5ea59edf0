"""Stable Diffusion's text encoders: CLIP's text transformer (SD v1) and OpenCLIP's (SD v2).

Both towers are the same architecture (Radford et al. 2021), so one module serves both:

* token embedding + learned absolute position embedding (no LayerNorm on the embeddings);
* `num_layers` pre-norm blocks: x = x + Attn(LN1(x)), x = x + fc2(act(fc1(LN2(x)))), with biased
  q/k/v/out projections and a CAUSAL mask (a token attends to itself and to the tokens before it;
  padding is not masked, as in CLIP and in the SD pipelines);
* a final LayerNorm.

`hidden` is final_layer_norm applied to the output of layer `num_layers - skip_last_layers`:
skip 0 is transformers' `last_hidden_state` (SD v1), skip 1 is diffusers' `clip_skip=1` and the
reference `FrozenOpenCLIPEmbedder(layer="penultimate")` of SD v2. `pooled` is `hidden` at the
first end-of-text token (transformers' `pooler_output`); a text projection is not part of this
module (SD's U-Nets read `hidden`).

Submodule names follow transformers' `CLIPTextModel` (`layers_{i}/self_attn/q_proj`, ...), so the
weight import (`ldm_jax.interop.clip_weights`) is a renaming and a transpose of the dense kernels.
LayerNorm and the softmax run in float32 whatever the compute dtype.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.models.layers import Dtype
from ldm_jax.models.partitioning import EMBED, HEADS, MLP, dense_kernel, embedding_table

HIDDEN_ACTS = ("quick_gelu", "gelu")

# transformers' CLIPTextConfig defaults: what a config.json that omits a field means.
_HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
}
# config.json name -> ClipTextConfig field (the other fields keep their names).
_HF_NAMES = {
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "max_position_embeddings": "max_positions",
}


@dataclasses.dataclass(frozen=True)
class ClipTextConfig:
    """Hyperparameters of a CLIP text transformer (defaults: SD v1's CLIP ViT-L/14 tower).

    `eos_token_id == 2` is transformers' legacy value (configs written before its PR #24773, SD
    v1's among them): the pooled token is then the position of the largest id, as transformers
    does, which is the first end-of-text token of CLIP's vocabulary.
    """

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    max_positions: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    pad_token_id: int = 49407

    def __post_init__(self):
        if self.hidden_act not in HIDDEN_ACTS:
            raise ValueError(
                f"ClipTextConfig.hidden_act={self.hidden_act!r} is not supported; "
                f"use one of {HIDDEN_ACTS}."
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"ClipTextConfig: hidden_size {self.hidden_size} is not divisible by "
                f"num_heads {self.num_heads}."
            )

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any]) -> ClipTextConfig:
        """From a transformers `CLIPTextConfig` dict (a diffusers `text_encoder/config.json`).

        A full `CLIPModel` config ("model_type": "clip") is read through its `text_config`. A
        `CLIPTextModelWithProjection` config is accepted: its text projection is not part of
        this module and is ignored. Missing fields take transformers' defaults.

        Raises:
          ValueError: a model type other than CLIP's text model, or an unsupported activation.
        """
        cfg = dict(cfg)
        model_type = cfg.get("model_type", "clip_text_model")
        if model_type == "clip" and isinstance(cfg.get("text_config"), Mapping):
            cfg = dict(cfg["text_config"])
            model_type = cfg.get("model_type", "clip_text_model")
        if model_type != "clip_text_model":
            raise ValueError(
                f"ClipTextConfig.from_hf: model_type {model_type!r} is not a CLIP text model "
                "(expected 'clip_text_model', or 'clip' with a text_config)."
            )
        act = cfg.get("hidden_act", _HF_DEFAULTS["hidden_act"])
        if act not in HIDDEN_ACTS:
            raise ValueError(
                f"ClipTextConfig.from_hf: hidden_act {act!r} is not supported; use one of "
                f"{HIDDEN_ACTS} (quick_gelu: CLIP ViT-L/14, gelu: OpenCLIP)."
            )
        eos = cfg.get("eos_token_id", _HF_DEFAULTS["eos_token_id"])
        if isinstance(eos, list | tuple):
            if len(eos) != 1:
                raise ValueError(f"ClipTextConfig.from_hf: eos_token_id {eos} must be one id.")
            cfg["eos_token_id"] = eos[0]
        if "projection_dim" in cfg or "WithProjection" in "".join(cfg.get("architectures") or []):
            logging.getLogger(__name__).info(
                "CLIP text config: the text projection is ignored (hidden states only)."
            )
        kwargs = {}
        for hf_name, default in _HF_DEFAULTS.items():
            value = cfg.get(hf_name, default)
            kwargs[_HF_NAMES.get(hf_name, hf_name)] = default if value is None else value
        return cls(**kwargs)

    def to_hf(self) -> dict[str, Any]:
        """A `config.json` that `transformers.CLIPTextModel.from_pretrained` loads."""
        out: dict[str, Any] = {
            "architectures": ["CLIPTextModel"],
            "model_type": "clip_text_model",
            "attention_dropout": 0.0,
            "dropout": 0.0,
            "initializer_factor": 1.0,
            "initializer_range": 0.02,
            "torch_dtype": "float32",
        }
        for hf_name in _HF_DEFAULTS:
            out[hf_name] = getattr(self, _HF_NAMES.get(hf_name, hf_name))
        return out


# SD v1: openai/clip-vit-large-patch14's text tower (diffusers' text_encoder).
CLIP_VIT_L14 = ClipTextConfig()
# SD v2: OpenCLIP ViT-H/14's text tower (laion2b_s32b_b79k), padded with "!" (id 0).
OPENCLIP_VIT_H14 = ClipTextConfig(
    hidden_size=1024,
    intermediate_size=4096,
    num_layers=24,
    num_heads=16,
    hidden_act="gelu",
    pad_token_id=0,
)


class ClipTextOutput(NamedTuple):
    """What `ClipTextTransformer` returns."""

    hidden: jax.Array  # [B, L, D] float32: final LayerNorm of the chosen layer's output
    pooled: jax.Array  # [B, D] float32: `hidden` at the first end-of-text token


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(Q K^T / sqrt(d)) V where query i sees keys 0..i, the softmax in float32.

    Args:
      q: [B, L, heads, d] queries.
      k: [B, L, heads, d] keys.
      v: [B, L, heads, d] values.

    Returns:
      [B, L, heads, d] in v's dtype.
    """
    n = q.shape[1]
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * scale  # [B, h, L, L]
    causal = jnp.tril(jnp.ones((n, n), bool))  # [L, L], True where key <= query
    logits = jnp.where(causal, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def _activation(name: str, x: jax.Array) -> jax.Array:
    if name == "quick_gelu":
        return x * jax.nn.sigmoid(1.702 * x)
    return jax.nn.gelu(x, approximate=False)


def _layer_norm(config: ClipTextConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32, name=name)


class ClipAttention(nn.Module):
    """Multi-head causal self-attention with biased q/k/v/out projections."""

    config: ClipTextConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        b, n, d = x.shape
        dim_head = d // cfg.num_heads
        h = x.astype(self.dtype)
        proj = lambda name: nn.Dense(
            d, dtype=self.dtype, kernel_init=dense_kernel((EMBED, HEADS)), name=name
        )(h).reshape(b, n, cfg.num_heads, dim_head)
        q, k, v = proj("q_proj"), proj("k_proj"), proj("v_proj")  # [B, L, heads, d]
        out = causal_attention(q, k, v).reshape(b, n, d)  # [B, L, D]
        return nn.Dense(
            d, dtype=self.dtype, kernel_init=dense_kernel((HEADS, EMBED)), name="out_proj"
        )(out)


class ClipMLP(nn.Module):
    """fc1 -> activation (quick_gelu or exact gelu) -> fc2."""

    config: ClipTextConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        h = nn.Dense(
            cfg.intermediate_size,
            dtype=self.dtype,
            kernel_init=dense_kernel((EMBED, MLP)),
            name="fc1",
        )(x.astype(self.dtype))
        h = _activation(cfg.hidden_act, h)
        return nn.Dense(
            cfg.hidden_size, dtype=self.dtype, kernel_init=dense_kernel((MLP, EMBED)), name="fc2"
        )(h)


class ClipEncoderLayer(nn.Module):
    """One pre-norm block; the residual stream stays float32."""

    config: ClipTextConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        attn = ClipAttention(cfg, self.dtype, name="self_attn")(_layer_norm(cfg, "layer_norm1")(x))
        x = x + attn.astype(jnp.float32)
        mlp = ClipMLP(cfg, self.dtype, name="mlp")(_layer_norm(cfg, "layer_norm2")(x))
        return x + mlp.astype(jnp.float32)  # [B, L, D] float32


class ClipTextTransformer(nn.Module):
    """CLIP's text transformer: token ids [B, L] -> `ClipTextOutput` (hidden, pooled).

    Attributes:
      config: the architecture (`CLIP_VIT_L14`, `OPENCLIP_VIT_H14` or a loaded one).
      dtype: compute dtype of the dense layers (LayerNorm, softmax and residuals stay float32).
    """

    config: ClipTextConfig = CLIP_VIT_L14
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, skip_last_layers: int = 0) -> ClipTextOutput:
        """Encodes token ids.

        Args:
          input_ids: [B, L] int token ids, L <= max_positions.
          skip_last_layers: static int; `hidden` is read after layer num_layers - skip (0: the
            last layer; 1: the penultimate, i.e. diffusers' clip_skip=1 and SD v2's context).

        Returns:
          `ClipTextOutput`: hidden [B, L, D] float32 and pooled [B, D] float32.
        """
        cfg = self.config
        n = input_ids.shape[1]
        if n > cfg.max_positions:
            raise ValueError(
                f"ClipTextTransformer: {n} tokens > max_positions {cfg.max_positions}."
            )
        if not 0 <= skip_last_layers < cfg.num_layers:
            raise ValueError(
                f"ClipTextTransformer: skip_last_layers={skip_last_layers} must be in "
                f"[0, {cfg.num_layers - 1}]."
            )
        input_ids = input_ids.astype(jnp.int32)
        embed = lambda rows, name: nn.Embed(
            rows, cfg.hidden_size, embedding_init=embedding_table(), name=name
        )
        x = (
            embed(cfg.vocab_size, "token_embedding")(input_ids)
            + embed(cfg.max_positions, "position_embedding")(jnp.arange(n))[None]
        ).astype(jnp.float32)  # [B, L, D]
        used = cfg.num_layers - skip_last_layers
        chosen = x
        for i in range(cfg.num_layers):
            if i >= used and not self.is_initializing():
                break  # The skipped layers only need to exist in the parameter tree.
            x = ClipEncoderLayer(cfg, self.dtype, name=f"layers_{i}")(x)
            if i == used - 1:
                chosen = x
        hidden = _layer_norm(cfg, "final_layer_norm")(chosen).astype(jnp.float32)  # [B, L, D]
        if cfg.eos_token_id == 2:  # transformers' legacy configs: the largest id
            eos_index = jnp.argmax(input_ids, axis=-1)
        else:
            eos_index = jnp.argmax(input_ids == cfg.eos_token_id, axis=-1)  # first eos
        pooled = jnp.take_along_axis(hidden, eos_index[:, None, None], axis=1)[:, 0]  # [B, D]
        return ClipTextOutput(hidden, pooled)
