"""Classifier-free guidance wrapper."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.diffusion import classifier_free_guidance


def _model(calls):
    def model_fn(x, t, cond):
        calls.append(x.shape[0])
        # Depends on x, t and both leaves of a dict condition.
        return x * cond["scale"][:, None] + cond["shift"] + t[:, None].astype(jnp.float32)

    return model_fn


def _inputs():
    x = jnp.arange(6.0).reshape(3, 2)  # [B=3, 2]
    t = jnp.array([1, 2, 3], jnp.int32)
    cond = {"scale": jnp.array([2.0, 3.0, 4.0]), "shift": jnp.ones((3, 2))}
    uncond = {"scale": jnp.zeros((1,)), "shift": jnp.zeros((1, 2))}  # broadcast null condition
    return x, t, cond, uncond


def test_one_model_call_on_doubled_batch_and_formula():
    calls = []
    x, t, cond, uncond = _inputs()
    f = jax.jit(lambda x, t, s: classifier_free_guidance(_model(calls), cond, uncond, s)(x, t))
    out = f(x, t, jnp.float32(7.5))
    assert calls == [6]  # traced once, on [x; x]
    e_c = x * cond["scale"][:, None] + 1.0 + t[:, None]
    e_u = 0.0 * x + t[:, None]
    np.testing.assert_allclose(out, e_u + 7.5 * (e_c - e_u), rtol=1e-6)
    # A new (traced) guidance scale reuses the compiled program.
    np.testing.assert_allclose(f(x, t, jnp.float32(0.0)), e_u, atol=1e-5)
    assert calls == [6] and f._cache_size() == 1


def test_scale_one_is_exactly_conditional():
    x, t, cond, uncond = _inputs()
    eps_fn = classifier_free_guidance(_model([]), cond, uncond, 1.0)
    e_c = _model([])(x, t, cond)
    assert np.array_equal(np.asarray(jax.jit(eps_fn)(x, t)), np.asarray(e_c))


def test_mismatched_uncond_raises():
    x, t, cond, _ = _inputs()
    with pytest.raises(ValueError, match="does not match"):
        classifier_free_guidance(
            _model([]), cond, {"scale": jnp.zeros((2,)), "shift": jnp.zeros((3, 2))}, 2.0
        )
