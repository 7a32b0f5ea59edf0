"""Attention cores: the blocked kernel equals softmax attention (values and gradients), the
chooser picks per backend and size, and unavailable kernels fall back cleanly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.models import attention_kernels as ak


def _numpy_attention(q, k, v):
    """Closed form in float64: softmax(q k^T / sqrt(d)) v per batch and head."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", w, v)


def _inputs(b, lq, lk, h, d, seed=0):
    rng = np.random.default_rng(seed)
    shape = lambda n: (b, n, h, d)
    return tuple(
        jnp.asarray(rng.normal(size=s).astype(np.float32))
        for s in (shape(lq), shape(lk), shape(lk))
    )


# (batch, Lq, Lk, heads, d): self-attention, cross-attention to 77 tokens, an odd pair count,
# and a single wide head (the autoencoder's AttnBlock).
SHAPES = [(2, 64, 64, 4, 8), (2, 96, 77, 3, 16), (3, 50, 50, 1, 32), (1, 16, 16, 1, 64)]


@pytest.mark.parametrize("shape", SHAPES)
def test_blocked_forward_matches_closed_form(shape):
    q, k, v = _inputs(*shape)
    out = jax.jit(ak.blocked_attention)(q, k, v)
    assert out.shape == q.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, _numpy_attention(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_blocked_gradients_match_plain_attention(shape):
    q, k, v = _inputs(*shape)
    dout = _inputs(*shape, seed=1)[0]
    grads = lambda f: jax.jit(lambda q, k, v: jax.vjp(f, q, k, v)[1](dout))(q, k, v)
    for got, want in zip(grads(ak.blocked_attention), grads(ak.einsum_attention), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_query_chunks_forward_and_gradients(monkeypatch):
    """With chunks of 16 query rows the backward sums dK and dV over the chunks."""
    monkeypatch.setattr(ak, "QUERY_CHUNK", 16)
    assert ak._query_chunks(64) == 4 and ak._query_chunks(60) == 4 and ak._query_chunks(17) == 1
    q, k, v = _inputs(2, 64, 40, 2, 8)
    dout = _inputs(2, 64, 40, 2, 8, seed=3)[0]
    out, vjp = jax.vjp(ak.blocked_attention, q, k, v)
    np.testing.assert_allclose(out, _numpy_attention(q, k, v), atol=1e-5, rtol=1e-5)
    _, ref_vjp = jax.vjp(ak.einsum_attention, q, k, v)
    for got, want in zip(vjp(dout), ref_vjp(dout), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_training_blocks_smaller_than_inference_blocks(monkeypatch):
    """Training uses TRAINING_BLOCK_LOGITS-sized blocks (here 16 rows at 40 keys) while the
    inference forward keeps one whole block: values and gradients still match plain attention."""
    monkeypatch.setattr(ak, "TRAINING_BLOCK_LOGITS", 16 * 40)
    assert ak._training_rows(40) == 16 and ak._training_rows(4000) == 1
    assert ak._query_chunks(64, ak._training_rows(40)) == 4 and ak._query_chunks(64) == 1
    q, k, v = _inputs(2, 64, 40, 2, 8)
    dout = _inputs(2, 64, 40, 2, 8, seed=5)[0]
    np.testing.assert_allclose(
        ak.blocked_attention(q, k, v), _numpy_attention(q, k, v), atol=1e-5, rtol=1e-5
    )
    out, vjp = jax.vjp(ak.blocked_attention, q, k, v)
    np.testing.assert_allclose(out, _numpy_attention(q, k, v), atol=1e-5, rtol=1e-5)
    _, ref_vjp = jax.vjp(ak.einsum_attention, q, k, v)
    for got, want in zip(vjp(dout), ref_vjp(dout), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_pairs_per_step_rule():
    """Powers of two within the logits budget, capped, at least one, at most the pair count."""
    assert ak._pairs_per_step(64, 1024, 1024, 1 << 22, 16) == 4
    assert ak._pairs_per_step(64, 512, 1024, 1 << 19, 8) == 1
    assert ak._pairs_per_step(64, 1024, 77, 1 << 19, 8) == 4  # 6.6 pairs fit: rounded down
    assert ak._pairs_per_step(64, 256, 256, 1 << 22, 16) == 16  # the cap
    assert ak._pairs_per_step(64, 4096, 4096, 1 << 19, 8) == 1  # over budget: still one
    assert ak._pairs_per_step(3, 64, 64, 1 << 22, 16) == 3  # no more than there are


def test_several_pairs_per_step_with_a_remainder(monkeypatch):
    """Six (batch, head) pairs mapped four at a time, forward and backward: the remainder of
    two runs separately and values and gradients still match plain attention."""
    monkeypatch.setattr(ak, "FORWARD_MAX_PAIRS", 4)
    monkeypatch.setattr(ak, "BACKWARD_MAX_PAIRS", 4)
    assert ak._pairs_per_step(6, 40, 30, ak.BACKWARD_STEP_LOGITS, ak.BACKWARD_MAX_PAIRS) == 4
    q, k, v = _inputs(3, 40, 30, 2, 8)
    dout = _inputs(3, 40, 30, 2, 8, seed=7)[0]
    np.testing.assert_allclose(
        jax.jit(ak.blocked_attention)(q, k, v), _numpy_attention(q, k, v), atol=1e-5, rtol=1e-5
    )
    out, vjp = jax.vjp(ak.blocked_attention, q, k, v)
    np.testing.assert_allclose(out, _numpy_attention(q, k, v), atol=1e-5, rtol=1e-5)
    _, ref_vjp = jax.vjp(ak.einsum_attention, q, k, v)
    for got, want in zip(vjp(dout), ref_vjp(dout), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_second_order_free_gradient_of_a_loss():
    """jax.grad through the kernel inside a scalar loss (as a train step uses it)."""
    q, k, v = _inputs(2, 48, 48, 2, 8)
    loss = lambda f: lambda q: jnp.sum(jnp.sin(f(q, k, v)))
    np.testing.assert_allclose(
        jax.grad(loss(ak.blocked_attention))(q),
        jax.grad(loss(ak.einsum_attention))(q),
        atol=1e-5,
        rtol=1e-5,
    )


def test_bfloat16_keeps_dtype_and_float32_softmax():
    q, k, v = (a.astype(jnp.bfloat16) for a in _inputs(2, 64, 64, 2, 8))
    out = ak.blocked_attention(q, k, v)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        out.astype(jnp.float32), _numpy_attention(q, k, v), atol=3e-2, rtol=3e-2
    )


@pytest.mark.parametrize(
    "backend,lq,lk,d,dtype,want",
    [
        ("cpu", 1024, 1024, 8, jnp.float32, "blocked"),
        ("cpu", 1024, 77, 8, jnp.float32, "blocked"),
        ("cpu", 64, 64, 32, jnp.float32, "einsum"),
        ("cpu", 1024, 1024, 64, jnp.bfloat16, "blocked"),
        ("gpu", 4096, 77, 64, jnp.bfloat16, "cudnn"),
        ("cuda", 4096, 4096, 64, jnp.float16, "cudnn"),
        ("gpu", 4096, 4096, 64, jnp.float32, "blocked"),  # cuDNN attention is half precision
        ("gpu", 4096, 4096, 160, jnp.bfloat16, "blocked"),  # head wider than cuDNN's 128
        ("tpu", 4096, 4096, 64, jnp.bfloat16, "pallas_flash"),
        ("tpu", 4096, 77, 64, jnp.bfloat16, "blocked"),  # 77 keys: not a multiple of 128
        ("tpu", 16, 16, 64, jnp.float32, "einsum"),
    ],
)
def test_choose_implementation(backend, lq, lk, d, dtype, want):
    assert ak.choose_implementation(backend, lq, lk, d, dtype) == want


@pytest.mark.parametrize("impl", ["auto", "einsum", "blocked", "cudnn", "pallas_flash"])
def test_every_implementation_runs_here_or_falls_back(impl):
    """On this CPU the GPU/TPU kernels are unavailable and must fall back to a correct core."""
    q, k, v = _inputs(1, 128, 128, 2, 8)
    out = ak.attention(q, k, v, impl)
    np.testing.assert_allclose(out, _numpy_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_unknown_implementation_is_an_error():
    q, k, v = _inputs(1, 8, 8, 1, 8)
    with pytest.raises(ValueError, match="unknown implementation 'flash'"):
        ak.attention(q, k, v, "flash")
