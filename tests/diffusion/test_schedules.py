"""Closed-form checks of the noise schedules."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.diffusion import NoiseSchedule


def _hand_betas(kind, T, b0, b1):
    if kind == "linear":
        return [b0 + (b1 - b0) * i / (T - 1) for i in range(T)]
    if kind == "scaled_linear":
        r0, r1 = math.sqrt(b0), math.sqrt(b1)
        return [(r0 + (r1 - r0) * i / (T - 1)) ** 2 for i in range(T)]
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    return [min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)]


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("T,b0,b1", [(10, 1e-4, 2e-2), (4, 0.00085, 0.012)])
def test_alphas_cumprod_matches_hand_computation(kind, T, b0, b1):
    s = NoiseSchedule.create(kind, num_timesteps=T, beta_start=b0, beta_end=b1)
    betas = _hand_betas(kind, T, b0, b1)
    ac = [math.prod(1 - b for b in betas[: i + 1]) for i in range(T)]
    assert s.num_timesteps == T
    for name in ("betas", "alphas", "alphas_cumprod", "sqrt_alphas_cumprod"):
        assert getattr(s, name).dtype == jnp.float32 and getattr(s, name).shape == (T,)
    np.testing.assert_allclose(s.betas, betas, rtol=1e-6)
    np.testing.assert_allclose(s.alphas, [1 - b for b in betas], rtol=1e-6)
    np.testing.assert_allclose(s.alphas_cumprod, ac, rtol=1e-6)
    np.testing.assert_allclose(s.alphas_cumprod_prev, [1.0] + ac[:-1], rtol=1e-6)
    np.testing.assert_allclose(
        s.sqrt_one_minus_alphas_cumprod, [math.sqrt(1 - a) for a in ac], rtol=1e-5
    )


def test_scaled_linear_endpoints_and_stable_diffusion_value():
    s = NoiseSchedule.create("scaled_linear", 1000, 0.00085, 0.012)
    assert float(s.betas[0]) == pytest.approx(0.00085, rel=1e-6)
    assert float(s.betas[-1]) == pytest.approx(0.012, rel=1e-6)
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    # Stable Diffusion's final alphas_cumprod is about 0.00466.
    assert float(s.alphas_cumprod[-1]) == pytest.approx(np.prod(1 - betas), rel=1e-5)
    assert 0.0045 < float(s.alphas_cumprod[-1]) < 0.0048


def test_cosine_clips_last_beta():
    s = NoiseSchedule.create("cosine", 1000)
    assert float(s.betas[-1]) == pytest.approx(0.999)
    assert float(jnp.max(s.betas)) <= 0.999 + 1e-7
    assert bool(jnp.all(jnp.diff(s.alphas_cumprod) < 0))


def test_posterior_buffers():
    s = NoiseSchedule.create("linear", 10)
    b = np.linspace(1e-4, 2e-2, 10)  # float64, as the schedule computes its buffers
    ac = np.cumprod(1 - b)
    ac_prev = np.append(1.0, ac[:-1])
    var = b * (1 - ac_prev) / (1 - ac)
    assert float(s.posterior_variance[0]) == 0.0
    np.testing.assert_allclose(s.posterior_variance, var, rtol=1e-5)
    np.testing.assert_allclose(
        s.posterior_log_variance_clipped, np.log(np.append(var[1], var[1:])), rtol=1e-5
    )


def test_schedule_is_a_pytree_through_jit():
    s = NoiseSchedule.create("linear", 10)
    out = jax.jit(lambda sch: (sch.alphas_cumprod * 2, sch.num_timesteps))(s)
    np.testing.assert_allclose(out[0], 2 * s.alphas_cumprod)
    assert out[1] == 10
    assert len(jax.tree.leaves(s)) == 10


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(kind="quadratic"), "valid kinds.*linear.*scaled_linear.*cosine"),
        (dict(kind="linear", num_timesteps=0), "num_timesteps must be > 0"),
        (dict(kind="linear", num_timesteps=2.5), "num_timesteps must be an int"),
        (dict(kind="linear", beta_start=0.0), "0 < beta_start < beta_end < 1"),
        (dict(kind="linear", beta_start=0.02, beta_end=0.01), "0 < beta_start < beta_end < 1"),
        (dict(kind="scaled_linear", beta_end=1.0), "0 < beta_start < beta_end < 1"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoiseSchedule.create(**kwargs)


@pytest.mark.parametrize(
    "kind,ref_kind,b0,b1",
    [
        ("linear", "linear", 1e-4, 2e-2),
        ("scaled_linear", "scaled_linear", 0.00085, 0.012),
        ("cosine", "squaredcos_cap_v2", 1e-4, 2e-2),
    ],
)
@pytest.mark.parametrize("zero_snr", [False, True])
def test_alphas_cumprod_match_diffusers(kind, ref_kind, b0, b1, zero_snr):
    from diffusers import DDIMScheduler

    ref = DDIMScheduler(
        beta_start=b0, beta_end=b1, beta_schedule=ref_kind, rescale_betas_zero_snr=zero_snr
    )
    s = NoiseSchedule.create(kind, 1000, b0, b1, rescale_zero_snr=zero_snr)
    # diffusers accumulates in float32; we do it in float64 and round once.
    np.testing.assert_allclose(s.alphas_cumprod, ref.alphas_cumprod.numpy(), rtol=2e-6, atol=1e-9)
    # Rescaled betas are ratios of float32 neighbours in diffusers: compare them absolutely.
    tol = dict(rtol=5e-5, atol=1e-6) if zero_snr else dict(rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(s.betas, ref.betas.numpy(), **tol)


def test_zero_terminal_snr_rescaling():
    plain = NoiseSchedule.create("scaled_linear", 1000, 0.00085, 0.012)
    s = NoiseSchedule.create("scaled_linear", 1000, 0.00085, 0.012, rescale_zero_snr=True)
    assert float(s.alphas_cumprod[-1]) == 0.0 and float(s.betas[-1]) == 1.0
    assert float(s.alphas_cumprod[0]) == pytest.approx(float(plain.alphas_cumprod[0]), rel=1e-6)
    assert bool(jnp.all(jnp.diff(s.alphas_cumprod) < 0))
    assert bool(jnp.all(jnp.isfinite(jnp.stack(jax.tree.leaves(s)))))
    with pytest.raises(ValueError, match="num_timesteps >= 2"):
        NoiseSchedule.create("linear", 1, rescale_zero_snr=True)
