"""Loss weights: min-SNR-gamma (diffusers' training recipe) and the reference's L_vlb mix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from ldm_jax.diffusion import (
    NoiseSchedule,
    eps_mse_loss,
    loss_weight,
    lvlb_weights,
    min_snr_weight,
    snr,
    weighted_mse_loss,
)

SCHED = NoiseSchedule.create("scaled_linear", 1000, 0.00085, 0.012)
T_SAMPLE = np.array([0, 1, 10, 250, 500, 999])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_min_snr_matches_the_diffusers_recipe(prediction_type):
    ref = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    gamma = 5.0
    ref_snr = compute_snr(ref, torch.from_numpy(T_SAMPLE)).numpy()
    # diffusers' train_text_to_image: min(snr, gamma) / snr (eps) or / (snr + 1) (v).
    clipped = np.minimum(ref_snr, gamma)
    want = {
        "epsilon": clipped / ref_snr,
        "v_prediction": clipped / (ref_snr + 1),
        "sample": clipped,
    }[prediction_type]
    t = jnp.asarray(T_SAMPLE, jnp.int32)
    np.testing.assert_allclose(snr(SCHED, t), ref_snr, rtol=2e-5)
    got = jax.jit(min_snr_weight, static_argnums=3)(SCHED, t, gamma, prediction_type)
    np.testing.assert_allclose(got, want, rtol=2e-5)
    assert got.shape == (len(T_SAMPLE),) and got.dtype == jnp.float32


def test_min_snr_at_zero_terminal_snr_is_finite():
    s = NoiseSchedule.create("linear", 100, rescale_zero_snr=True)
    t = jnp.array([0, 50, 99], jnp.int32)
    for p in ("epsilon", "v_prediction", "sample"):
        w = min_snr_weight(s, t, 5.0, p)
        assert bool(jnp.all(jnp.isfinite(w))), p
    assert float(min_snr_weight(s, t, 5.0, "epsilon")[-1]) == 1.0


def _compvis_lvlb(betas, parameterization):
    """The reference LatentDiffusion's register_schedule, float64 (v_posterior = 0)."""
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    with np.errstate(divide="ignore"):
        if parameterization == "eps":
            w = betas**2 / (2 * post_var * alphas * (1 - ac))
        elif parameterization == "x0":
            w = 0.5 * np.sqrt(ac) / (2.0 * 1 - ac)
        else:
            w = np.ones_like(betas)
    w[0] = w[1]
    return w


@pytest.mark.parametrize(
    "prediction_type,param", [("epsilon", "eps"), ("sample", "x0"), ("v_prediction", "v")]
)
def test_lvlb_weights_match_the_reference(prediction_type, param):
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    want = _compvis_lvlb(betas, param)
    got = jax.jit(lvlb_weights, static_argnums=1)(SCHED, prediction_type)
    assert got.shape == (1000,) and bool(jnp.all(jnp.isfinite(got)))
    np.testing.assert_allclose(got, want, rtol=2e-4)


def test_loss_weight_mixes_simple_and_vlb_as_the_reference():
    t = jnp.asarray(T_SAMPLE, jnp.int32)
    lvlb = lvlb_weights(SCHED)[t]
    np.testing.assert_array_equal(loss_weight(SCHED, t), 1.0)
    got = loss_weight(SCHED, t, l_simple_weight=0.5, original_elbo_weight=1e-3)
    np.testing.assert_allclose(got, 0.5 + 1e-3 * lvlb, rtol=1e-6)
    gamma_w = loss_weight(SCHED, t, "min_snr", min_snr_gamma=1.0)
    np.testing.assert_allclose(gamma_w, min_snr_weight(SCHED, t, 1.0), rtol=1e-6)
    assert float(gamma_w[-1]) == 1.0 and float(gamma_w[0]) < 0.01  # clipped at low noise
    with pytest.raises(ValueError, match="valid.*simple.*min_snr"):
        loss_weight(SCHED, t, "p2")


def test_weighted_loss_is_per_example():
    pred = jnp.ones((3, 2, 2, 1))
    target = jnp.zeros((3, 2, 2, 1))
    t = jnp.array([0, 500, 999], jnp.int32)
    got = jax.jit(lambda p, y: weighted_mse_loss(p, y, SCHED, t, "min_snr"))(pred, target)
    np.testing.assert_allclose(got, min_snr_weight(SCHED, t) * eps_mse_loss(pred, target))
    assert got.shape == (3,)
