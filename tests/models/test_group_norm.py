"""GroupNorm32: the closed form, flax's `nn.GroupNorm` (values, gradients, parameter paths)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.models.layers import GroupNorm32, GroupNormSiLU, group_norm


def _closed_form(x, scale, bias, groups, eps):
    """float64 NumPy GroupNorm over [B, ..., C]."""
    x = np.asarray(x, np.float64)
    b, c = x.shape[0], x.shape[-1]
    g = x.reshape(b, -1, groups, c // groups)
    mean = g.mean(axis=(1, 3), keepdims=True)
    var = g.var(axis=(1, 3), keepdims=True)
    y = ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return y * np.asarray(scale, np.float64) + np.asarray(bias, np.float64)


def _data(shape, seed=0, offset=1.5):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape).astype(np.float32) * 2.0 + offset)
    c = shape[-1]
    scale = jnp.asarray(rng.normal(size=c).astype(np.float32))
    bias = jnp.asarray(rng.normal(size=c).astype(np.float32))
    return x, scale, bias


@pytest.mark.parametrize(
    "shape,groups", [((2, 8, 8, 64), 32), ((3, 5, 7, 96), 32), ((2, 40, 64), 32), ((1, 4, 4, 8), 4)]
)
def test_group_norm_matches_closed_form(shape, groups):
    x, scale, bias = _data(shape)
    got = jax.jit(group_norm, static_argnums=(3, 4))(x, scale, bias, groups, 1e-5)
    assert got.dtype == jnp.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, _closed_form(x, scale, bias, groups, 1e-5), atol=2e-5)


def test_group_norm32_equals_flax_group_norm_values_and_gradients():
    x, scale, bias = _data((2, 8, 8, 64), seed=1)
    ours, ref = GroupNorm32(32, 1e-6), nn.GroupNorm(32, epsilon=1e-6)
    params = {"params": {"norm": {"scale": scale, "bias": bias}}}
    ref_params = {"params": {"scale": scale, "bias": bias}}
    dout = _data((2, 8, 8, 64), seed=2)[0]

    def vjp(module, p):
        f = lambda p, x: nn.silu(module.apply(p, x))
        out, pull = jax.vjp(f, p, x)
        return out, pull(dout)

    (out, (gp, gx)), (want, (rgp, rgx)) = vjp(ours, params), vjp(ref, ref_params)
    np.testing.assert_allclose(out, want, atol=1e-5)
    np.testing.assert_allclose(gx, rgx, atol=1e-5)
    for name in ("scale", "bias"):
        got, exp = gp["params"]["norm"][name], rgp["params"][name]
        np.testing.assert_allclose(got, exp, rtol=1e-4, atol=1e-4 * float(jnp.abs(exp).max()))


def test_group_norm32_parameters_sit_where_flax_puts_them():
    x = jnp.ones((1, 4, 4, 64))
    ours = GroupNorm32(32).init(jax.random.PRNGKey(0), x)["params"]
    flax_tree = {"norm": nn.GroupNorm(32).init(jax.random.PRNGKey(0), x)["params"]}
    assert jax.tree.structure(ours) == jax.tree.structure(flax_tree)
    np.testing.assert_array_equal(ours["norm"]["scale"], np.ones(64))
    np.testing.assert_array_equal(ours["norm"]["bias"], np.zeros(64))


def test_group_norm32_bfloat16_input_uses_float32_statistics():
    x, scale, bias = _data((2, 8, 8, 64), seed=3, offset=40.0)  # large mean: bf16 stats would fail
    params = {"params": {"norm": {"scale": scale, "bias": bias}}}
    out = GroupNorm32(32, 1e-5).apply(params, x.astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    want = _closed_form(x.astype(jnp.bfloat16).astype(jnp.float32), scale, bias, 32, 1e-5)
    np.testing.assert_allclose(out.astype(jnp.float32), want, atol=5e-2, rtol=2e-2)


def test_group_norm32_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="48 channels not divisible by 32"):
        GroupNorm32(32).init(jax.random.PRNGKey(0), jnp.ones((1, 2, 2, 48)))


class _NormSiLU(nn.Module):
    """`GroupNormSiLU` (fused) or its reference: GroupNorm32, the modulation, SiLU."""

    fused: bool

    @nn.compact
    def __call__(self, x, add=None, modulation=None):
        if self.fused:
            return GroupNormSiLU(8, 1e-5, name="gn")(x, add, modulation)
        y = GroupNorm32(8, 1e-5, name="gn")(x if add is None else x + add)
        if modulation is not None:
            y = y * (1 + modulation[0]) + modulation[1]
        return nn.silu(y)


@pytest.mark.parametrize("variant", ["plain", "add", "modulation"])
def test_group_norm_silu_matches_norm_then_silu(variant):
    x, _, _ = _data((2, 6, 5, 32), seed=3)
    rng = np.random.default_rng(4)
    emb = lambda: jnp.asarray(rng.normal(size=(2, 1, 1, 32)), jnp.float32)
    add = emb() if variant == "add" else None
    modulation = (emb(), emb()) if variant == "modulation" else None
    fused, reference = _NormSiLU(True), _NormSiLU(False)
    params = fused.init(jax.random.PRNGKey(0), x)
    params = jax.tree_util.tree_map(lambda p: p + rng.normal(size=p.shape), params)
    ref_params = reference.init(jax.random.PRNGKey(0), x)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(ref_params)

    def loss(module):
        def f(p, x, add, modulation):
            y = module.apply(p, x, add, modulation)
            return jnp.sum(y * jnp.cos(y)), y

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3), has_aux=True))

    (got_loss, got_y), got = loss(fused)(params, x, add, modulation)
    (want_loss, want_y), want = loss(reference)(params, x, add, modulation)
    np.testing.assert_allclose(got_y, want_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
    close = lambda g, w: np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
    jax.tree_util.tree_map(close, got, want)
    assert np.abs(got[1]).max() > 0 and np.abs(got[0]["params"]["gn"]["norm"]["scale"]).max() > 0


def test_group_norm_silu_names_an_indivisible_channel_count():
    with pytest.raises(ValueError, match="30 channels not divisible by 8 groups"):
        GroupNormSiLU(8).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 30)))
