"""Forward process, conversions and the per-example loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.diffusion import (
    NoiseSchedule,
    eps_from_model_output,
    eps_mse_loss,
    predict_eps_from_v,
    predict_eps_from_x0,
    predict_x0_from_eps,
    predict_x0_from_v,
    q_sample,
    split_model_output,
    training_target,
    velocity,
    x0_from_model_output,
)

SCHED = NoiseSchedule.create("linear", 1000)


def test_q_sample_statistics():
    n, t_val = 20000, 300
    x0 = jnp.broadcast_to(jnp.array([1.5, -0.5, 0.0]), (n, 3))  # [N, 3]
    t = jnp.full((n,), t_val, jnp.int32)
    noise = jax.random.normal(jax.random.key(0), x0.shape)
    xt = jax.jit(q_sample)(SCHED, x0, t, noise)
    ab = float(SCHED.alphas_cumprod[t_val])
    assert xt.dtype == jnp.float32 and xt.shape == x0.shape
    np.testing.assert_allclose(xt.mean(0), np.sqrt(ab) * np.array([1.5, -0.5, 0.0]), atol=0.03)
    np.testing.assert_allclose(xt.var(0), 1 - ab, rtol=0.05)


def test_q_sample_broadcasts_per_example_t_over_nhwc():
    x0 = jnp.ones((3, 4, 4, 2))
    t = jnp.array([0, 500, 999], jnp.int32)
    xt = jax.jit(q_sample)(SCHED, x0, t, jnp.zeros_like(x0))
    np.testing.assert_allclose(
        xt[:, 0, 0, 0], np.sqrt(np.asarray(SCHED.alphas_cumprod)[t]), rtol=1e-6
    )
    assert np.all(np.asarray(xt) == np.asarray(xt)[:, :1, :1, :1])


def test_eps_and_x0_conversions_round_trip():
    k1, k2 = jax.random.split(jax.random.key(1))
    x0 = jax.random.normal(k1, (4, 8, 8, 3))
    eps = jax.random.normal(k2, x0.shape)
    t = jnp.array([0, 10, 500, 900], jnp.int32)
    xt = q_sample(SCHED, x0, t, eps)
    f = jax.jit(
        lambda xt, e, x: (
            predict_x0_from_eps(SCHED, xt, t, e),
            predict_eps_from_x0(SCHED, xt, t, x),
        )
    )
    x0_hat, eps_hat = f(xt, eps, x0)
    np.testing.assert_allclose(x0_hat, x0, atol=2e-3)  # 1/sqrt(ab_900) amplifies rounding
    np.testing.assert_allclose(eps_hat, eps, atol=2e-3)


@pytest.mark.parametrize("ptype", ["epsilon", "sample", "v_prediction"])
def test_training_target_converts_back_to_eps(ptype):
    k1, k2 = jax.random.split(jax.random.key(2))
    x0 = jax.random.normal(k1, (3, 5))
    eps = jax.random.normal(k2, x0.shape)
    t = jnp.array([1, 400, 800], jnp.int32)
    xt = q_sample(SCHED, x0, t, eps)
    f = jax.jit(
        lambda: eps_from_model_output(
            SCHED, xt, t, training_target(SCHED, x0, t, eps, ptype), ptype
        )
    )
    np.testing.assert_allclose(f(), eps, atol=1e-3)


def test_unknown_prediction_type_raises():
    with pytest.raises(ValueError, match="valid.*epsilon"):
        training_target(
            SCHED, jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32), jnp.zeros((1, 2)), "score"
        )


def test_eps_mse_loss_is_per_example_float32():
    pred = jnp.array([[[1.0, 2.0]], [[0.0, 0.0]]], jnp.bfloat16)  # [2, 1, 2]
    target = jnp.zeros((2, 1, 2))
    loss = jax.jit(eps_mse_loss)(pred, target)
    assert loss.shape == (2,) and loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, [2.5, 0.0])
    with pytest.raises(ValueError, match="shapes differ"):
        eps_mse_loss(pred, target[:, 0])


def test_v_conversions_and_split_agree():
    k1, k2 = jax.random.split(jax.random.key(3))
    x0 = jax.random.normal(k1, (3, 4, 4, 2))
    eps = jax.random.normal(k2, x0.shape)
    t = jnp.array([0, 400, 999], jnp.int32)
    xt = q_sample(SCHED, x0, t, eps)
    v = velocity(SCHED, x0, t, eps)
    np.testing.assert_allclose(predict_x0_from_v(SCHED, xt, t, v), x0, atol=1e-5)
    np.testing.assert_allclose(predict_eps_from_v(SCHED, xt, t, v), eps, atol=1e-5)
    ab = SCHED.alphas_cumprod[t][:, None, None, None]  # what samplers hold: [B, 1, 1, 1]
    for ptype, out in (("epsilon", eps), ("sample", x0), ("v_prediction", v)):
        got_x0, got_eps = jax.jit(split_model_output, static_argnums=3)(out, xt, ab, ptype)
        np.testing.assert_allclose(got_x0, x0, atol=2e-3, err_msg=ptype)
        np.testing.assert_allclose(got_eps, eps, atol=2e-3, err_msg=ptype)
        np.testing.assert_allclose(
            x0_from_model_output(SCHED, xt, t, out, ptype), got_x0, rtol=1e-5, atol=5e-5
        )


def test_v_prediction_is_finite_at_zero_terminal_snr():
    s = NoiseSchedule.create("scaled_linear", 1000, 0.00085, 0.012, rescale_zero_snr=True)
    x_t, v = jnp.ones((2, 3)), jnp.full((2, 3), 0.5)
    x0, eps = split_model_output(v, x_t, s.alphas_cumprod[-1], "v_prediction")
    np.testing.assert_allclose(x0, -0.5)  # ab = 0: x0 = -v, eps = x_t
    np.testing.assert_allclose(eps, 1.0)
