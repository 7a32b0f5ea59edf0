"""GEGLU (rematerialised in the backward pass) against its closed form and derivatives;
`FeedForward` against nn.Dense + GEGLU + nn.Dense."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.models.attention import FeedForward, geglu


def _phi(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _cdf(x):
    return 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def test_geglu_value_and_gradient_match_the_closed_form():
    rng = np.random.default_rng(0)
    h = rng.normal(scale=2.0, size=(3, 4, 10)).astype(np.float32)
    w = rng.normal(size=(3, 4, 5)).astype(np.float32)  # upstream gradient
    a, g = np.split(h.astype(np.float64), 2, axis=-1)
    np.testing.assert_allclose(jax.jit(geglu)(h), a * g * _cdf(g), atol=2e-6)

    got = jax.jit(jax.grad(lambda h: jnp.sum(geglu(h) * w)))(h)
    want_a = w * g * _cdf(g)
    want_gate = w * a * (_cdf(g) + g * _phi(g))
    np.testing.assert_allclose(got, np.concatenate([want_a, want_gate], axis=-1), atol=1e-5)


class _DenseFeedForward(nn.Module):
    """The reference: nn.Dense, GEGLU, nn.Dense, at FeedForward's parameter paths."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = geglu(nn.Dense(8 * x.shape[-1], dtype=self.dtype, name="net_0_proj")(x))
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="net_2")(h)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_feed_forward_equals_dense_geglu_dense(dtype):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 7, 16)), jnp.float32)
    ours, reference = FeedForward(dtype=dtype), _DenseFeedForward(dtype)
    params = ours.init(jax.random.PRNGKey(0), x)
    ref_params = reference.init(jax.random.PRNGKey(0), x)
    same_shapes = lambda a, b: a.shape == b.shape and a.dtype == b.dtype == jnp.float32
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(same_shapes, nn.unbox(params), ref_params))
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * rng.normal(size=p.shape), ref_params)

    def value_and_grads(module):
        loss = lambda p, x: jnp.sum(jnp.sin(module.apply(p, x).astype(jnp.float32)))
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)

    got, want = value_and_grads(ours), value_and_grads(reference)
    tol = 1e-5 if dtype == jnp.float32 else 5e-2
    close = lambda g, w: np.testing.assert_allclose(
        np.asarray(g, np.float32), np.asarray(w, np.float32), rtol=tol, atol=tol
    )
    jax.tree_util.tree_map(close, got, want)
    assert ours.apply(params, x).dtype == dtype
    assert np.abs(got[1][0]["params"]["net_0_proj"]["kernel"]).max() > 0
