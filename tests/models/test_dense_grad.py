"""`dense_grad.dense_dot_general`: the same values and gradients as `lax.dot_general` (and a
float64 closed form), its custom VJP taken only for the plain Dense contraction on CPU, and
the U-Net's "dots" remat still saving Dense outputs."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.ad_checkpoint import print_saved_residuals

from ldm_jax.models import dense_grad
from ldm_jax.models.unet import REMAT_POLICIES

DENSE = (((2,), (0,)), ((), ()))  # x [B, L, D] . w [D, F]


def _loss(dot_general):
    return lambda x, w: jnp.sum(jnp.sin(dot_general(x, w, DENSE).astype(jnp.float32)))


def test_values_and_gradients_match_lax_and_the_float64_closed_form():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 50, 12)).astype(np.float32)
    w = rng.normal(size=(12, 20)).astype(np.float32)
    got = jax.jit(jax.value_and_grad(_loss(dense_grad.dense_dot_general), (0, 1)))(x, w)
    want = jax.jit(jax.value_and_grad(_loss(lax.dot_general), (0, 1)))(x, w)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)

    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    dy = np.cos(x64 @ w64)  # d loss / d y
    np.testing.assert_allclose(got[1][0], dy @ w64.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[1][1], x64.reshape(-1, 12).T @ dy.reshape(-1, 20), atol=1e-3)


def test_bfloat16_keeps_dtypes_and_agrees_with_lax():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 16, 8)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(8, 4)), jnp.bfloat16)
    y = dense_grad.dense_dot_general(x, w, DENSE)
    assert y.dtype == jnp.bfloat16
    got = jax.grad(_loss(dense_grad.dense_dot_general), (0, 1))(x, w)
    want = jax.grad(_loss(lax.dot_general), (0, 1))(x, w)
    for g, r in zip(got, want, strict=True):
        assert g.dtype == r.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.float32(g), np.float32(r), rtol=5e-2, atol=5e-2)


def _uses_custom_vjp(fn, *args) -> bool:
    return "custom_vjp_call" in str(jax.make_jaxpr(fn)(*args))


def test_custom_vjp_only_for_the_plain_dense_contraction():
    x, w = jnp.ones((2, 5, 3)), jnp.ones((3, 4))
    assert _uses_custom_vjp(lambda x, w: dense_grad.dense_dot_general(x, w, DENSE), x, w)
    # Batch dimensions, another contracting axis, or an explicit accumulation type: lax itself.
    batched = (((2,), (1,)), ((0,), (0,)))
    xb, wb = jnp.ones((2, 5, 3)), jnp.ones((2, 3, 4))
    fn = lambda x, w: dense_grad.dense_dot_general(x, w, batched)
    assert not _uses_custom_vjp(fn, xb, wb)
    np.testing.assert_allclose(fn(xb, wb), lax.dot_general(xb, wb, batched))
    first_axis = (((0,), (0,)), ((), ()))
    x0 = jnp.ones((3, 5))
    assert not _uses_custom_vjp(lambda x, w: dense_grad.dense_dot_general(x, w, first_axis), x0, w)
    typed = lambda x, w: dense_grad.dense_dot_general(x, w, DENSE, None, jnp.float32)
    assert not _uses_custom_vjp(typed, x, w)


def test_other_backends_get_lax_dot_general(monkeypatch):
    monkeypatch.setattr(dense_grad.jax, "default_backend", lambda: "tpu")
    x, w = jnp.ones((2, 5, 3)), jnp.ones((3, 4))
    assert not _uses_custom_vjp(lambda x, w: dense_grad.dense_dot_general(x, w, DENSE), x, w)


class _TwoDense(nn.Module):
    dot_general: object

    @nn.compact
    def __call__(self, x):
        dense = lambda n: nn.Dense(8, dot_general=self.dot_general, name=n)
        return jnp.sin(dense("b")(jnp.tanh(dense("a")(x))))


def _saved_matmul_outputs(dot_general, policy, capsys) -> list[str]:
    module = nn.remat(_TwoDense, policy=REMAT_POLICIES[policy])(dot_general)
    x = jnp.ones((2, 6, 4))
    params = module.init(jax.random.PRNGKey(0), x)
    capsys.readouterr()
    print_saved_residuals(lambda p: jnp.sum(module.apply(p, x)), params)
    lines = capsys.readouterr().out.splitlines()
    marks = ("output of dot_general", f"named '{dense_grad.OUTPUT_NAME}'")
    return [line for line in lines if any(m in line for m in marks)]


@pytest.mark.parametrize("policy, saved", [("dots", 2), ("full", 0)])
def test_remat_policies_save_the_dense_outputs_lax_would(policy, saved, capsys):
    """The custom VJP hides the dot from `dots_with_no_batch_dims_saveable`; the name keeps it."""
    ours = _saved_matmul_outputs(dense_grad.dense_dot_general, policy, capsys)
    plain = _saved_matmul_outputs(lax.dot_general, policy, capsys)
    assert len(ours) == len(plain) == saved, (ours, plain)
    assert all(line.startswith("f32[2,6,8]") for line in ours + plain)
    assert all("named" in line for line in ours)
