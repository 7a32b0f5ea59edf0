"""DDIM and DDPM single steps: the closed-form posterior and parity with diffusers' schedulers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from ldm_jax.diffusion import (
    NoiseSchedule,
    ddim_step,
    ddim_update,
    ddpm_posterior,
    ddpm_step,
    ddpm_update,
    split_model_output,
)
from tests.diffusion import analytic

SCHED = NoiseSchedule.create("linear", 1000)


def test_ddpm_posterior_matches_numpy():
    rng = np.random.default_rng(0)
    x0, xt = rng.normal(size=(3, 2, 2, 1)), rng.normal(size=(3, 2, 2, 1))
    t = np.array([0, 1, 700])
    b = np.linspace(1e-4, 2e-2, 1000)
    ac = np.cumprod(1 - b)
    ac_prev = np.append(1.0, ac[:-1])
    var = b * (1 - ac_prev) / (1 - ac)
    c = lambda a: a[t][:, None, None, None]
    mean = (
        c(np.sqrt(ac_prev) * b / (1 - ac)) * x0 + c(np.sqrt(1 - b) * (1 - ac_prev) / (1 - ac)) * xt
    )
    got_mean, got_var, got_logvar = jax.jit(ddpm_posterior)(
        SCHED, jnp.asarray(x0), jnp.asarray(xt), jnp.asarray(t, jnp.int32)
    )
    np.testing.assert_allclose(got_mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_var[:, 0, 0, 0], var[t], rtol=1e-4)
    assert float(got_var[0, 0, 0, 0]) == 0.0
    np.testing.assert_allclose(
        got_logvar[:, 0, 0, 0], np.log([var[1], var[1], var[700]]), rtol=1e-5
    )


def test_consecutive_ddpm_step_and_ddim_eta_one_use_the_posterior():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x, eps, noise = (jax.random.normal(k, (2, 3)) for k in (k1, k2, k3))
    t = 400
    a_t, a_prev = SCHED.alphas_cumprod[t], SCHED.alphas_cumprod[t - 1]
    x_prev, x0 = jax.jit(ddpm_step)(x, eps, a_t, a_prev, noise)
    mean, var, _ = ddpm_posterior(SCHED, x0, x, jnp.full((2,), t, jnp.int32))
    np.testing.assert_allclose(x_prev, mean + jnp.sqrt(var) * noise, rtol=1e-4, atol=1e-5)
    # DDIM with eta = 1 has the posterior standard deviation: isolate it via the noise term.
    f = jax.jit(ddim_step)
    diff = f(x, eps, a_t, a_prev, 1.0, noise)[0] - f(x, eps, a_t, a_prev, 1.0, 0 * noise)[0]
    np.testing.assert_allclose(diff, jnp.sqrt(var) * noise, rtol=1e-3, atol=1e-6)


def _diffusers(cls, kind, prediction_type, num_steps, **kw):
    """A diffusers scheduler reading our alphas_cumprod (the schedules' own parity is tested in
    test_schedules.py; here both sides get identical inputs)."""
    b0, b1 = analytic.BETAS[kind]
    sch = cls(beta_start=b0, beta_end=b1, beta_schedule=kind, prediction_type=prediction_type, **kw)
    ours = NoiseSchedule.create(kind, 1000, b0, b1)
    sch.alphas_cumprod = torch.from_numpy(np.array(ours.alphas_cumprod))
    sch.set_timesteps(num_steps)
    return sch, np.asarray(ours.alphas_cumprod)


@pytest.mark.parametrize("kind", ["linear", "scaled_linear"])
@pytest.mark.parametrize("num_steps", [1000, 50])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_ddpm_posterior_matches_diffusers(kind, num_steps, prediction_type):
    sch, ac = _diffusers(DDPMScheduler, kind, prediction_type, num_steps, clip_sample=False)
    rng = np.random.default_rng(0)
    update = jax.jit(ddpm_update)
    for i in (0, 1, num_steps // 2, num_steps - 2, num_steps - 1):
        t = int(sch.timesteps[i])
        prev = int(sch.previous_timestep(t))
        x = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
        out = rng.standard_normal(x.shape).astype(np.float32)
        want = sch.step(
            torch.from_numpy(out),
            t,
            torch.from_numpy(x),
            generator=torch.Generator().manual_seed(t),
        ).prev_sample.numpy()
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t)).numpy()
        want_var = float(sch._get_variance(t)) if t > 0 else 0.0  # diffusers adds no noise at 0
        want_mean = want - want_var**0.5 * noise

        a_t, a_prev = ac[t], (ac[prev] if prev >= 0 else np.float32(1.0))
        x0, _ = split_model_output(jnp.asarray(out), jnp.asarray(x), a_t, prediction_type)
        mean = update(jnp.asarray(x), x0, a_t, a_prev, jnp.zeros(x.shape))
        var = (1 - a_t / a_prev) * (1 - a_prev) / (1 - a_t)
        np.testing.assert_allclose(mean, want_mean, rtol=0, atol=1e-6, err_msg=f"t={t}")
        assert abs(var - want_var) < 1e-6, (t, var, want_var)
        # The sample itself, with the reference's noise: mean + std * noise.
        got = update(jnp.asarray(x), x0, a_t, a_prev, jnp.asarray(noise))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=f"t={t}")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_stochastic_step_matches_diffusers(prediction_type):
    eta = 0.7
    sch, ac = _diffusers(
        DDIMScheduler,
        "scaled_linear",
        prediction_type,
        20,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    rng = np.random.default_rng(1)
    for t in sch.timesteps[[0, 10, 19]].tolist():
        prev = t - 1000 // 20
        x, out, noise = (rng.standard_normal((2, 8)).astype(np.float32) for _ in range(3))
        want = sch.step(
            torch.from_numpy(out),
            t,
            torch.from_numpy(x),
            eta=eta,
            variance_noise=torch.from_numpy(noise),
        ).prev_sample.numpy()
        a_t, a_prev = ac[t], (ac[prev] if prev >= 0 else ac[0])
        x0, eps = split_model_output(jnp.asarray(out), jnp.asarray(x), a_t, prediction_type)
        got = jax.jit(ddim_update)(x0, eps, a_t, a_prev, eta, jnp.asarray(noise))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=f"t={t}")
