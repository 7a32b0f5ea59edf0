"""The U-Net's plain AttentionBlock (legacy and new QKV order) and the linear attention block."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.models.attention import AttentionBlock, LinAttnBlock


def _group_norm(x, groups, eps):
    b, h, w, c = x.shape
    g = x.reshape(b, h * w, groups, c // groups)
    mean = g.mean(axis=(1, 3), keepdims=True)
    var = g.var(axis=(1, 3), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(b, h, w, c)


def _softmax(a):
    a = np.exp(a - a.max(-1, keepdims=True))
    return a / a.sum(-1, keepdims=True)


def _reference_attention_block(x, qkv_w, qkv_b, proj_w, proj_b, heads, new_order):
    """NumPy transcription of the reference in channels-first layout [B, C, T]."""
    b, h, w, c = x.shape
    y = _group_norm(x, 32, 1e-5).reshape(b, h * w, c).transpose(0, 2, 1)  # [B, C, T]
    qkv = np.einsum("oc,bct->bot", qkv_w, y) + qkv_b[None, :, None]  # [B, 3C, T]
    d = c // heads
    if new_order:  # QKVAttention: chunk q, k, v, then split heads
        q, k, v = (a.reshape(b * heads, d, -1) for a in np.split(qkv, 3, axis=1))
    else:  # QKVAttentionLegacy: split heads, then q, k, v
        q, k, v = np.split(qkv.reshape(b * heads, 3 * d, -1), 3, axis=1)
    s = d**-0.25
    weight = _softmax(np.einsum("bct,bcs->bts", q * s, k * s))
    a = np.einsum("bts,bcs->bct", weight, v).reshape(b, c, -1)
    out = np.einsum("oc,bct->bot", proj_w, a) + proj_b[None, :, None]
    return x + out.transpose(0, 2, 1).reshape(b, h, w, c)


@pytest.mark.parametrize("new_order", [False, True])
def test_attention_block_matches_reference_head_order(new_order):
    rng = np.random.default_rng(0)
    c, heads = 64, 4
    x = rng.normal(size=(2, 4, 4, c)).astype(np.float32)
    block = AttentionBlock(num_heads=heads, use_new_attention_order=new_order)
    params = nn.unbox(block.init(jax.random.PRNGKey(0), x))["params"]
    params = jax.tree_util.tree_map(
        lambda a: 0.2 * rng.normal(size=a.shape).astype(np.float32), params
    )
    params["norm"]["norm"] = {"scale": np.ones(c, np.float32), "bias": np.zeros(c, np.float32)}
    out = jax.jit(block.apply)({"params": params}, x)
    qkv_w = np.asarray(params["qkv"]["kernel"])[0].T  # [3C, C], as torch's Conv1d weight
    proj_w = np.asarray(params["proj_out"]["kernel"])[0].T
    expected = _reference_attention_block(
        x, qkv_w, params["qkv"]["bias"], proj_w, params["proj_out"]["bias"], heads, new_order
    )
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_head_orders_differ_and_names():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 4, 64))
    legacy, new = AttentionBlock(4, False), AttentionBlock(4, True)
    params = nn.unbox(legacy.init(jax.random.PRNGKey(1), x))["params"]
    assert set(params) == {"norm", "qkv", "proj_out"}
    assert params["qkv"]["kernel"].shape == (1, 64, 192)  # a kernel-1 1-D conv, like Conv1d
    np.testing.assert_array_equal(params["proj_out"]["kernel"], 0.0)  # zero_module
    params["proj_out"]["kernel"] = jnp.ones_like(params["proj_out"]["kernel"])
    a, b = legacy.apply({"params": params}, x), new.apply({"params": params}, x)
    assert float(jnp.abs(a - b).max()) > 1e-3


def test_linear_attention_block_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 5, 8)).astype(np.float32)
    block = LinAttnBlock()
    params = nn.unbox(block.init(jax.random.PRNGKey(0), x))["params"]
    assert "bias" not in params["to_qkv"]
    out = block.apply({"params": params}, x)
    wqkv = np.asarray(params["to_qkv"]["kernel"])[0, 0]  # [C, 3C]
    q, k, v = np.split(x.reshape(2, 15, 8) @ wqkv, 3, axis=-1)  # [B, T, C]
    k = _softmax(k.transpose(0, 2, 1)).transpose(0, 2, 1)  # softmax over positions
    ctx = np.einsum("btd,bte->bde", k, v)
    o = np.einsum("bde,btd->bte", ctx, q)
    wo, bo = np.asarray(params["to_out"]["kernel"])[0, 0], np.asarray(params["to_out"]["bias"])
    np.testing.assert_allclose(out.reshape(2, 15, 8), o @ wo + bo, rtol=1e-4, atol=1e-5)
