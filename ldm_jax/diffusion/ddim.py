"""DDIM (Song et al. 2021) and DDPM ancestral (Ho et al. 2020) updates and their sampler specs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ldm_jax.diffusion.objectives import extract
from ldm_jax.diffusion.sampler_api import Predictor, SamplerOptions, SamplerSpec, StepInput
from ldm_jax.diffusion.schedules import NoiseSchedule


def ddpm_posterior(
    schedule: NoiseSchedule, x0: jax.Array, x_t: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Closed form q(x_{t-1} | x_t, x_0) of Ho et al. (2020), eqs. 6-7.

    Args:
        schedule: the noise schedule.
        x0: clean (or predicted) data [B, ...].
        x_t: noisy data [B, ...].
        t: int32 [B].

    Returns:
        (mean [B, ...], variance [B, 1, ...], log_variance_clipped [B, 1, ...]), float32; the
        variance is 0 at t = 0 and its log is clipped to the t = 1 value there.
    """
    nd = x_t.ndim
    coef_x0 = extract(schedule.posterior_mean_coef1, t, nd)  # [B, 1, ...]
    coef_xt = extract(schedule.posterior_mean_coef2, t, nd)
    mean = coef_x0 * x0.astype(jnp.float32) + coef_xt * x_t.astype(jnp.float32)
    return (
        mean,
        extract(schedule.posterior_variance, t, nd),
        extract(schedule.posterior_log_variance_clipped, t, nd),
    )


def ddim_sigma(alpha_t: jax.Array, alpha_prev: jax.Array, eta: jax.Array) -> jax.Array:
    """DDIM's noise scale eta * sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))."""
    return eta * jnp.sqrt((1.0 - alpha_prev) / (1.0 - alpha_t) * (1.0 - alpha_t / alpha_prev))


def ddim_update(
    x0: jax.Array,
    eps: jax.Array,
    alpha_t: jax.Array,
    alpha_prev: jax.Array,
    eta: jax.Array,
    noise: jax.Array,
) -> jax.Array:
    """DDIM (Song et al. 2021, eq. 12) from the (x0, eps) prediction at ab_t to ab_prev.

    Returns:
        x_prev [B, ...] = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma noise.
    """
    sigma = ddim_sigma(alpha_t, alpha_prev, eta)
    direction = jnp.sqrt(jnp.maximum(1.0 - alpha_prev - sigma**2, 0.0)) * eps
    return jnp.sqrt(alpha_prev) * x0 + direction + sigma * noise


def ddpm_update(
    x: jax.Array, x0: jax.Array, alpha_t: jax.Array, alpha_prev: jax.Array, noise: jax.Array
) -> jax.Array:
    """Ancestral step x_prev ~ q(x_prev | x_t, x0) from ab_t to ab_prev (strided or consecutive).

    Uses the effective beta = 1 - ab_t / ab_prev and the posterior variance ("fixed_small", as
    diffusers' DDPMScheduler); with ab_prev = 1 (the last step) the variance is 0.
    """
    beta = 1.0 - alpha_t / alpha_prev
    coef_x0 = jnp.sqrt(alpha_prev) * beta / (1.0 - alpha_t)
    coef_xt = jnp.sqrt(1.0 - beta) * (1.0 - alpha_prev) / (1.0 - alpha_t)
    variance = beta * (1.0 - alpha_prev) / (1.0 - alpha_t)
    return coef_x0 * x0 + coef_xt * x + jnp.sqrt(variance) * noise


def _x0_from_eps(x, eps, alpha_t, clip_sample):
    x0 = (x - jnp.sqrt(1.0 - alpha_t) * eps) / jnp.sqrt(alpha_t)
    return x0 if clip_sample is None else jnp.clip(x0, -clip_sample, clip_sample)


def ddim_step(
    x: jax.Array,
    eps: jax.Array,
    alpha_t: jax.Array,
    alpha_prev: jax.Array,
    eta: jax.Array,
    noise: jax.Array,
    clip_sample: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One DDIM update from an eps prediction (see `ddim_update`).

    Args:
        x: x_t [B, ...] float32.
        eps: predicted noise [B, ...].
        alpha_t: ab at the current timestep, [] float32.
        alpha_prev: ab at the next (less noisy) timestep, [] float32.
        eta: 0 is deterministic DDIM, 1 has DDPM's posterior variance; [] traced.
        noise: standard normal [B, ...] (only used when eta > 0).
        clip_sample: if set, the x0 prediction is clipped to [-clip_sample, clip_sample].

    Returns:
        (x_prev [B, ...], x0_pred [B, ...]).
    """
    x0 = _x0_from_eps(x, eps, alpha_t, clip_sample)
    return ddim_update(x0, eps, alpha_t, alpha_prev, eta, noise), x0


def ddpm_step(
    x: jax.Array,
    eps: jax.Array,
    alpha_t: jax.Array,
    alpha_prev: jax.Array,
    noise: jax.Array,
    clip_sample: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One ancestral step from an eps prediction (see `ddpm_update`).

    Returns:
        (x_prev [B, ...], x0_pred [B, ...]).
    """
    x0 = _x0_from_eps(x, eps, alpha_t, clip_sample)
    return ddpm_update(x, x0, alpha_t, alpha_prev, noise), x0


def _ddim(predict: Predictor, x, extra, inp: StepInput, opts: SamplerOptions):
    pred = predict(x, inp)
    if opts.eta_is_zero:  # sigma = 0: skip the PRNG (it costs compile time)
        noise = jnp.zeros_like(x)
    else:
        noise = jax.random.normal(inp.key, x.shape, jnp.float32)
    return ddim_update(pred.x0, pred.eps, inp.alpha_from, inp.alpha_to, opts.eta, noise), extra


def _ddpm(predict: Predictor, x, extra, inp: StepInput, opts: SamplerOptions):
    pred = predict(x, inp)
    noise = jax.random.normal(inp.key, x.shape, jnp.float32)
    return ddpm_update(x, pred.x0, inp.alpha_from, inp.alpha_to, noise), extra


DDIM = SamplerSpec(step=_ddim, eta_noise=True)
DDPM = SamplerSpec(step=_ddpm, final_alpha_one=True, needs_rng=True)
