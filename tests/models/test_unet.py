"""U-Net, SpatialTransformer and class embedder: shapes, maths and names."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.models.attention import dot_product_attention
from ldm_jax.models.conditioning import ClassEmbedder, drop_labels
from ldm_jax.models.latent_denoiser import LatentDenoiser
from ldm_jax.models.layers import timestep_embedding
from ldm_jax.models.unet import UNetModel


def _unet(**kw) -> UNetModel:
    base = dict(
        model_channels=32,
        out_channels=4,
        num_res_blocks=1,
        attention_resolutions=(1, 2),
        channel_mult=(1, 2),
        num_head_channels=16,
        context_dim=24,
    )
    return UNetModel(**{**base, **kw})


def test_timestep_embedding_closed_form():
    t = jnp.array([0, 7, 999])
    emb = np.asarray(timestep_embedding(t, 6))
    freqs = np.exp(-np.log(10000.0) * np.arange(3) / 3)
    expected = np.concatenate([np.cos(t[:, None] * freqs), np.sin(t[:, None] * freqs)], -1)
    np.testing.assert_allclose(emb, expected, rtol=1e-5, atol=1e-5)


def test_dot_product_attention_matches_numpy():
    rng = np.random.default_rng(0)
    q, k, v = (
        rng.normal(size=s).astype(np.float32) for s in [(2, 5, 3, 4), (2, 7, 3, 4), (2, 7, 3, 4)]
    )
    out = np.asarray(dot_product_attention(q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / 2.0
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, np.einsum("bhqk,bkhd->bqhd", w, v), rtol=1e-5, atol=1e-5)


def test_unet_shapes_names_and_zero_initialised_output():
    unet = _unet()
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
    t = jnp.array([3, 500], jnp.int32)
    ctx = jax.random.normal(jax.random.PRNGKey(1), (2, 1, 24))
    params = nn.unbox(unet.init(jax.random.PRNGKey(2), x, t, ctx))["params"]
    out = unet.apply({"params": params}, x, t, ctx)
    assert out.shape == (2, 8, 8, 4) and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, 0.0)  # `out_2` is zero-initialised as in the paper.
    names = set(params)
    assert {
        "time_embed_0",
        "time_embed_2",
        "input_blocks_0_0",
        "input_blocks_1_0",
        "input_blocks_1_1",
        "input_blocks_2_0",
        "input_blocks_3_0",
        "middle_block_0",
        "middle_block_1",
        "middle_block_2",
        "output_blocks_0_0",
        "output_blocks_1_2",
        "output_blocks_3_1",
        "out_0",
        "out_2",
    } <= names
    block = params["input_blocks_1_1"]["transformer_blocks_0"]
    assert set(block) == {"attn1", "attn2", "ff", "norm1", "norm2", "norm3"}
    assert block["attn2"]["to_k"]["kernel"].shape == (24, 32)  # context_dim -> heads*dim_head
    assert block["ff"]["net_0_proj"]["kernel"].shape == (32, 256)  # GEGLU: 2 * 4 * dim


def test_unet_output_depends_on_time_and_context():
    unet = _unet()
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 8, 8, 4))
    ctx = jax.random.normal(jax.random.PRNGKey(1), (1, 1, 24))
    params = nn.unbox(unet.init(jax.random.PRNGKey(2), x, jnp.zeros((1,), jnp.int32), ctx))[
        "params"
    ]
    # Give the zero-initialised output and residual convs weights so all paths are live.
    params = jax.tree_util.tree_map_with_path(
        lambda p, a: (
            jax.random.normal(jax.random.PRNGKey(len(str(p))), a.shape) * 0.05
            if not np.any(np.asarray(a))
            else a
        ),
        params,
    )
    f = jax.jit(lambda t, c: unet.apply({"params": params}, x, t, c))
    base = f(jnp.array([10]), ctx)
    assert float(jnp.abs(base - f(jnp.array([900]), ctx)).max()) > 1e-4
    assert float(jnp.abs(base - f(jnp.array([10]), ctx + 1.0)).max()) > 1e-4


def test_unet_head_settings_are_validated():
    with pytest.raises(ValueError, match="exactly one of num_heads and num_head_channels"):
        _unet(num_heads=4).init(
            jax.random.PRNGKey(0),
            jnp.zeros((1, 8, 8, 4)),
            jnp.zeros((1,), jnp.int32),
            jnp.zeros((1, 1, 24)),
        )


def test_class_embedder_null_class_and_label_dropout():
    emb = ClassEmbedder(num_classes=10, embed_dim=8)
    labels = jnp.arange(11)
    params = nn.unbox(emb.init(jax.random.PRNGKey(0), labels))["params"]
    tokens = emb.apply({"params": params}, labels)
    assert tokens.shape == (11, 1, 8)
    assert params["embedding"]["embedding"].shape == (11, 8)  # 10 classes + null
    dropped = drop_labels(jax.random.PRNGKey(0), jnp.zeros((20000,), jnp.int32), 0.1, 10)
    frac = float(jnp.mean(dropped == 10))
    assert 0.09 < frac < 0.11
    assert set(np.unique(np.asarray(dropped))) == {0, 10}


def test_latent_denoiser_uses_reference_submodule_names():
    den = LatentDenoiser(diffusion_model=_unet(), cond_stage_model=ClassEmbedder(10, 24))
    params = jax.eval_shape(
        den.init,
        jax.random.PRNGKey(0),
        jnp.zeros((1, 8, 8, 4)),
        jnp.zeros((1,), jnp.int32),
        jnp.zeros((1,), jnp.int32),
    )["params"]
    assert set(params) == {"diffusion_model", "cond_stage_model"}
