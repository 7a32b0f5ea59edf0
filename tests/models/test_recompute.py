"""`recompute_in_backward`: the function's values and gradients, the recomputation made to wait."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.models import recompute
from ldm_jax.models.recompute import recompute_in_backward


def _block(x, pair, maybe, power, name):
    """Arrays, a tuple, an optional array and two static values; nonlinear in every input."""
    assert name == "block"  # static values arrive unchanged
    h = jnp.sin(x) ** power + pair[0] * jnp.tanh(pair[1])
    if maybe is not None:
        h = h * jnp.exp(-maybe)
    return h, jnp.cos(x)


def _loss(fn, x, pair, maybe):
    h, c = fn(x, pair, maybe, 3, "block")
    return jnp.sum(h * h) + jnp.sum(c)


def _inputs():
    rng = np.random.default_rng(0)
    arr = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
    return arr(4, 6), (arr(6), arr(4, 6)), arr(1, 6)


@pytest.mark.parametrize("with_optional", [True, False])
def test_values_and_gradients_are_the_functions(with_optional):
    x, pair, maybe = _inputs()
    maybe = maybe if with_optional else None
    wrapped = recompute_in_backward(_block, static_argnums=(3, 4))
    got_value = jax.jit(lambda *a: wrapped(*a, 3, "block"))(x, pair, maybe)
    want_value = jax.jit(lambda *a: _block(*a, 3, "block"))(x, pair, maybe)
    jax.tree_util.tree_map(np.testing.assert_array_equal, got_value, want_value)
    argnums = (0, 1, 2) if with_optional else (0, 1)
    got = jax.jit(jax.grad(lambda *a: _loss(wrapped, *a), argnums))(x, pair, maybe)
    want = jax.jit(jax.grad(lambda *a: _loss(_block, *a), argnums))(x, pair, maybe)
    jax.tree_util.tree_map(
        lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6), got, want
    )
    assert all(np.abs(g).max() > 0 for g in jax.tree_util.tree_leaves(got))


def test_the_recomputation_waits_for_the_output_gradient():
    """On CPU the saved inputs read the output gradient: a NaN output gradient reaches x's
    gradient through the recomputed cos(x), although d sum(w * cos x)/dx = -w sin x does not
    depend on the other output's gradient."""
    x, pair, _ = _inputs()
    wrapped = recompute_in_backward(_block, static_argnums=(3, 4))
    _, vjp_fn = jax.vjp(lambda x: wrapped(x, pair, None, 3, "block"), x)
    h_grad = jnp.zeros((4, 6)).at[0, 0].set(jnp.nan)
    (plain,) = jax.vjp(lambda x: _block(x, pair, None, 3, "block"), x)[1](
        (jnp.zeros((4, 6)), jnp.ones((4, 6)))
    )
    (tied,) = vjp_fn((h_grad, jnp.ones((4, 6))))
    assert np.isfinite(np.asarray(plain)).all()
    assert np.isnan(np.asarray(tied)).all()


def test_other_backends_use_jax_checkpoint(monkeypatch):
    x, pair, maybe = _inputs()
    monkeypatch.setattr(recompute.jax, "default_backend", lambda: "gpu")
    wrapped = recompute_in_backward(_block, static_argnums=(3, 4))
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: _loss(wrapped, x, pair, maybe)))(x))
    assert "checkpoint" in jaxpr or "remat" in jaxpr
    assert "custom_vjp" not in jaxpr
    got = jax.grad(lambda x: _loss(wrapped, x, pair, maybe))(x)
    want = jax.grad(lambda x: _loss(_block, x, pair, maybe))(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
