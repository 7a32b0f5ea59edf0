"""The contract between `samplers.sample` and each sampler family (DDIM/DDPM, PLMS, DPM-Solver++).

A sampler is a `SamplerSpec`: a numpy `plan` that turns the static timestep grid into per-iteration
tables, and a `step` that `sample` runs as the body of one `lax.scan` over those tables. Each
iteration evaluates the model exactly once (through the `Predictor` that `sample` hands in, which
applies guidance and the eps/x0/v conversion), so one compiled program holds one copy of the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from ldm_jax.diffusion.timesteps import make_timesteps


class StepInput(NamedTuple):
    """Per-iteration values scanned over (scalars, plus the sampler's own `aux` row)."""

    index: jax.Array  # [] int32, 0 .. K - 1
    t: jax.Array  # [] int32 timestep the model is evaluated at
    alpha: jax.Array  # [] float32 ab at t
    alpha_from: jax.Array  # [] float32 ab of the sample the update starts from
    alpha_to: jax.Array  # [] float32 ab the update lands on (the final alpha after the last step)
    key: jax.Array  # PRNG key for this iteration (a dummy uint32 when the sampler draws none)
    aux: Any  # pytree of this iteration's rows of `Plan.aux`


class Prediction(NamedTuple):
    """The model's prediction at one iteration, in both parameterisations."""

    x0: jax.Array  # [B, ...] float32 (clipped when clip_sample is set)
    eps: jax.Array  # [B, ...] float32 (as predicted, never re-derived from the clipped x0)


class SamplerOptions(NamedTuple):
    """Sampler knobs shared by all iterations."""

    eta: jax.Array  # [] float32, traced
    clip_sample: float | None  # static
    eta_is_zero: bool = False  # static: eta was a Python 0, so DDIM need not draw noise


class Plan(NamedTuple):
    """Static per-iteration tables (numpy, leading dim K = number of model evaluations).

    Timestep entries are indices into the schedule; -1 stands for the final alpha (1, or
    alphas_cumprod[0] when the sampler follows `set_alpha_to_one=False`).
    """

    t_model: np.ndarray  # int [K]
    t_from: np.ndarray  # int [K]
    t_to: np.ndarray  # int [K]
    aux: Any = ()  # pytree of numpy arrays with leading dim K


# (x [B, ...], step_input) -> Prediction at (x, step_input.t)
Predictor = Callable[[jax.Array, StepInput], Prediction]
# (predict, x, extra, step_input, options) -> (x_next, extra)
StepFn = Callable[[Predictor, jax.Array, Any, StepInput, SamplerOptions], tuple[jax.Array, Any]]


def one_step_per_timestep(grid: np.ndarray) -> Plan:
    """The plan of single-step samplers: evaluate at grid[k], move to grid[k + 1] (or the end)."""
    grid = np.asarray(grid, np.int32)
    return Plan(t_model=grid, t_from=grid, t_to=np.append(grid[1:], -1).astype(np.int32))


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """A sampler: its grid, its plan, its step and the extra state it carries.

    Attributes:
        step: the scan body (see `StepFn`).
        plan: grid [N] -> `Plan` with K model evaluations.
        init_extra: x_T -> the initial extra carry (e.g. an eps history); () if stateless.
        timesteps: (T, num_steps, spacing, steps_offset) -> grid [N] (descending).
        final_alpha_one: True to end at ab = 1, None to follow `sample(set_alpha_to_one=...)`.
        needs_rng: True if every sample is random (then `sample` requires `rng`).
        eta_noise: True if the step draws noise when eta != 0 (DDIM).
        zero_alpha_floor: if set, entries of alphas_cumprod equal to 0 (zero terminal SNR) are
            replaced by this value, as diffusers' DPM-Solver (2**-24) does to keep log-SNR finite.
    """

    step: StepFn
    plan: Callable[[np.ndarray], Plan] = one_step_per_timestep
    init_extra: Callable[[jax.Array], Any] = lambda x: ()
    timesteps: Callable[[int, int, str, int], np.ndarray] = make_timesteps
    final_alpha_one: bool | None = None
    needs_rng: bool = False
    eta_noise: bool = False
    zero_alpha_floor: float | None = None
