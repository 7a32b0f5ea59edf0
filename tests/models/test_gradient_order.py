"""`early_param_grads`: the same values and gradients, with the input gradients made to wait."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.models.gradient_order import early_param_grads


class _Block(nn.Module):
    """Two inputs (one may be None), a static flag, parameters, dropout."""

    @nn.compact
    def __call__(self, x, extra, deterministic):
        h = nn.LayerNorm()(x)
        if extra is not None:
            h = h + nn.Dense(x.shape[-1], name="extra")(extra)[:, None, :]
        h = nn.Dropout(0.5)(jax.nn.gelu(nn.Dense(16, name="up")(h)), deterministic=deterministic)
        return x + nn.Dense(x.shape[-1], name="down")(h)


class _Net(nn.Module):
    wrapped: bool

    @nn.compact
    def __call__(self, x, extra, deterministic):
        block = _Block(name="block")
        if self.wrapped:
            return early_param_grads(block, num_static=1)(x, extra, deterministic)
        return block(x, extra, deterministic)


def _value_and_grads(wrapped, params, x, extra, deterministic):
    net = _Net(wrapped)

    def loss(p, x, extra):
        y = net.apply(p, x, extra, deterministic, rngs={"dropout": jax.random.PRNGKey(3)})
        return jnp.sum(jnp.sin(y))

    return jax.value_and_grad(loss, argnums=(0, 1, 2))(params, x, extra)


def test_values_parameter_paths_and_gradients_are_unchanged():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
    extra = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    params = _Net(True).init(jax.random.PRNGKey(0), x, extra, True)
    plain_params = _Net(False).init(jax.random.PRNGKey(0), x, extra, True)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(plain_params)
    for deterministic in (True, False):  # False: dropout active, the same key both ways
        for e in (extra, None):
            got = _value_and_grads(True, params, x, e, deterministic)
            want = _value_and_grads(False, params, x, e, deterministic)
            jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
    grads = _value_and_grads(True, params, x, extra, False)[1][0]
    assert all(np.abs(g).max() > 0 for g in jax.tree_util.tree_leaves(grads))


class _Offset(nn.Module):
    @nn.compact
    def __call__(self, x):
        p = self.param("p", nn.initializers.zeros, ())
        return x + jnp.sqrt(p)  # d/dp at p = 0 is infinite; d/dx is 1


class _OffsetNet(nn.Module):
    wrapped: bool

    @nn.compact
    def __call__(self, x):
        block = _Offset(name="block")
        return (early_param_grads(block) if self.wrapped else block)(x)


def test_input_gradients_wait_for_the_parameter_gradients():
    """The input gradients read every parameter gradient (a non-finite one makes them NaN)."""
    x = jnp.ones((3,))

    def input_grad(wrapped):
        net = _OffsetNet(wrapped)
        params = net.init(jax.random.PRNGKey(0), x)
        return jax.grad(lambda x: jnp.sum(net.apply(params, x)))(x)

    np.testing.assert_array_equal(input_grad(False), np.ones(3))
    assert np.isnan(np.asarray(input_grad(True))).all()


def test_other_backends_call_the_block_as_it_is(monkeypatch):
    """Off CPU the backward pass has no tie: no max over the parameter gradients."""
    x = jnp.ones((3,))
    net = _OffsetNet(True)
    params = net.init(jax.random.PRNGKey(0), x)

    def backward_jaxpr():  # a new function each time: traces are cached per function
        return str(jax.make_jaxpr(jax.grad(lambda p: jnp.sum(net.apply(p, x))))(params))

    assert "reduce_max" in backward_jaxpr()
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert "reduce_max" not in backward_jaxpr()
