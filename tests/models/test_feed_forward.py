"""GEGLU (rematerialised in the backward pass) against its closed form and derivatives."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.models.attention import geglu


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
