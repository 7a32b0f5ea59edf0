"""DPM-Solver++(2M) (Lu et al. 2022), as diffusers' `DPMSolverMultistepScheduler` with
algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", lower_order_final=True and
final_sigmas_type="zero".

With lambda = log(alpha / sigma) (alpha = sqrt(ab), sigma = sqrt(1 - ab)) and h = lambda_to -
lambda_from, each step is
  x_to = (sigma_to / sigma_from) x + alpha_to (1 - e^{-h}) D,
where D = x0 (first order: the first step and the last one, which lands on sigma = 0) or
D = x0 + (h / (2 h_prev)) (x0 - x0_prev) (second order, multistep).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.diffusion.sampler_api import (
    Plan,
    Predictor,
    SamplerOptions,
    SamplerSpec,
    StepInput,
    one_step_per_timestep,
)
from ldm_jax.diffusion.timesteps import dpm_solver_timesteps

# diffusers' stand-in for ab = 0 (zero terminal SNR): the float16 smallest subnormal.
ZERO_ALPHA_FLOOR = 2.0**-24


class DPMState(NamedTuple):
    """Carry: the previous x0 prediction and the log-SNR it was made at."""

    x0_prev: jax.Array  # [B, ...] float32
    lambda_prev: jax.Array  # [] float32


def log_snr_half(alpha_bar: jax.Array) -> jax.Array:
    """lambda = log(sqrt(ab) / sqrt(1 - ab)); +inf at ab = 1."""
    return 0.5 * (jnp.log(alpha_bar) - jnp.log1p(-alpha_bar))


def dpmpp_2m_update(
    x: jax.Array,
    x0: jax.Array,
    x0_prev: jax.Array,
    alpha_from: jax.Array,
    alpha_to: jax.Array,
    lambda_prev: jax.Array,
    second_order: jax.Array,
) -> jax.Array:
    """One DPM-Solver++ multistep update from ab_from to ab_to (see the module docstring).

    Args:
        x: the sample at ab_from [B, ...].
        x0: the x0 prediction there [B, ...].
        x0_prev: the x0 prediction of the previous step [B, ...] (unused at first order).
        alpha_from, alpha_to: ab of the two ends, [] float32 (alpha_to may be 1).
        lambda_prev: log-SNR of the previous step's start, [].
        second_order: [] bool; False gives the first-order (DDIM-equivalent) update.

    Returns:
        x at ab_to [B, ...].
    """
    lam_from, lam_to = log_snr_half(alpha_from), log_snr_half(alpha_to)
    h = lam_to - lam_from  # +inf when alpha_to = 1
    h_prev = lam_from - lambda_prev
    d_coef = jnp.where(second_order, 0.5 * h / jnp.where(second_order, h_prev, 1.0), 0.0)
    d = x0 + d_coef * (x0 - x0_prev)
    sigma_ratio = jnp.sqrt((1.0 - alpha_to) / (1.0 - alpha_from))
    return sigma_ratio * x + jnp.sqrt(alpha_to) * (-jnp.expm1(-h)) * d


def dpm_plan(grid: np.ndarray) -> Plan:
    """Single-step plan plus the per-iteration order: second order except the first and last."""
    plan = one_step_per_timestep(grid)
    k = np.arange(len(grid))
    return plan._replace(aux=(k >= 1) & (k <= len(grid) - 2))


def _dpmpp_2m(predict: Predictor, x, state: DPMState, inp: StepInput, opts: SamplerOptions):
    x0 = predict(x, inp).x0
    x_next = dpmpp_2m_update(
        x, x0, state.x0_prev, inp.alpha_from, inp.alpha_to, state.lambda_prev, inp.aux
    )
    return x_next, DPMState(x0_prev=x0, lambda_prev=log_snr_half(inp.alpha_from))


def _init(x: jax.Array) -> DPMState:
    return DPMState(x0_prev=jnp.zeros_like(x), lambda_prev=jnp.zeros((), jnp.float32))


DPMPP_2M = SamplerSpec(
    step=_dpmpp_2m,
    plan=dpm_plan,
    init_extra=_init,
    timesteps=dpm_solver_timesteps,
    final_alpha_one=True,
    zero_alpha_floor=ZERO_ALPHA_FLOOR,
)
