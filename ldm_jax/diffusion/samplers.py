"""Reverse-process samplers (DDPM ancestral, DDIM) as `jax.lax.scan` bodies.

`sample` builds the timestep sequence in numpy from static arguments and runs the whole loop as one
`lax.scan`, so under `jax.jit` (with `STATIC_ARGNAMES` static) it is a single compiled program whose
`eta`, `rng`, `x_T` and schedule are traced. A sampler is a `SamplerSpec` in `SAMPLERS`: one step
function plus the state it carries, so multistep samplers (PLMS, DPM-Solver++(2M)) plug in by
carrying their eps/x0 history in `extra`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.diffusion.objectives import extract
from ldm_jax.diffusion.schedules import NoiseSchedule

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]  # (x [B, ...], t int32 [B]) -> eps [B, ...]

TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
# Arguments of `sample` that must be static under `jax.jit`.
STATIC_ARGNAMES = (
    "eps_fn",
    "sampler",
    "num_steps",
    "timestep_spacing",
    "steps_offset",
    "set_alpha_to_one",
    "clip_sample",
)


def make_timesteps(
    num_train_timesteps: int,
    num_steps: int,
    spacing: str = "leading",
    steps_offset: int = 0,
) -> np.ndarray:
    """The descending timesteps a sampler visits, as in diffusers' `timestep_spacing`.

    Args:
        num_train_timesteps: T of the schedule.
        num_steps: number of sampler steps, 1 <= num_steps <= T.
        spacing: "leading" (arange(num_steps) * (T // num_steps) + steps_offset; the paper
            code's "uniform" DDIM grid is "leading" with steps_offset=1), "trailing"
            (round(arange(T, 0, -T / num_steps)) - 1) or "linspace"
            (round(linspace(0, T - 1, num_steps))).
        steps_offset: added to the "leading" grid only (as diffusers).

    Returns:
        int32 [num_steps], strictly descending, inside [0, T - 1].

    Raises:
        ValueError: on an unknown spacing or out-of-range counts.
    """
    if spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"Unknown timestep_spacing {spacing!r}; valid: {TIMESTEP_SPACINGS}.")
    T = int(num_train_timesteps)
    if not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must be in [1, {T}] (the schedule length), got {num_steps}.")
    if spacing == "leading":
        ts = (np.arange(num_steps, dtype=np.int64) * (T // num_steps) + steps_offset)[::-1]
    elif spacing == "trailing":  # arange(T, 0, -T/n) without its float end-point hazard
        ts = np.round(T - np.arange(num_steps) * (T / num_steps)).astype(np.int64) - 1
    else:
        ts = np.round(np.linspace(0, T - 1, num_steps)).astype(np.int64)[::-1]
    if ts.min() < 0 or ts.max() > T - 1:
        raise ValueError(
            f"Timesteps {ts.tolist()} leave [0, {T - 1}]; lower steps_offset={steps_offset}."
        )
    return np.ascontiguousarray(ts, dtype=np.int32)


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
    """One DDIM update (Song et al. 2021, eq. 12) from ab_t to ab_prev.

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
    sigma = eta * jnp.sqrt((1.0 - alpha_prev) / (1.0 - alpha_t) * (1.0 - alpha_t / alpha_prev))
    direction = jnp.sqrt(jnp.maximum(1.0 - alpha_prev - sigma**2, 0.0)) * eps
    return jnp.sqrt(alpha_prev) * x0 + direction + sigma * noise, x0


def ddpm_step(
    x: jax.Array,
    eps: jax.Array,
    alpha_t: jax.Array,
    alpha_prev: jax.Array,
    noise: jax.Array,
    clip_sample: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One ancestral step x_{t'} ~ q(x_{t'} | x_t, x0_pred), t' < t (strided or consecutive).

    Uses the effective beta = 1 - ab_t / ab_prev and the posterior variance ("fixed_small"); with
    ab_prev = 1 (the last step) the variance is 0 and the step returns x0_pred.

    Returns:
        (x_prev [B, ...], x0_pred [B, ...]).
    """
    x0 = _x0_from_eps(x, eps, alpha_t, clip_sample)
    beta = 1.0 - alpha_t / alpha_prev
    coef_x0 = jnp.sqrt(alpha_prev) * beta / (1.0 - alpha_t)
    coef_xt = jnp.sqrt(1.0 - beta) * (1.0 - alpha_prev) / (1.0 - alpha_t)
    variance = beta * (1.0 - alpha_prev) / (1.0 - alpha_t)
    return coef_x0 * x0 + coef_xt * x + jnp.sqrt(variance) * noise, x0


class StepInput(NamedTuple):
    """Per-step values scanned over (all scalars)."""

    index: jax.Array  # [] int32, 0 .. num_steps - 1
    t: jax.Array  # [] int32 current timestep
    t_prev: jax.Array  # [] int32 next timestep, -1 after the last step
    alpha_t: jax.Array  # [] float32 alphas_cumprod[t]
    alpha_prev: jax.Array  # [] float32 alphas_cumprod[t_prev], or the final alpha
    key: jax.Array  # PRNG key for this step


class SamplerOptions(NamedTuple):
    """Sampler knobs shared by all steps."""

    eta: jax.Array  # [] float32, traced
    clip_sample: float | None  # static


# (eps_fn, x, extra, step_input, options) -> (x_prev, extra)
StepFn = Callable[[EpsFn, jax.Array, Any, StepInput, SamplerOptions], tuple[jax.Array, Any]]


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """A sampler: its step, the extra state it carries, and where its last step lands.

    Attributes:
        step: the scan body (see `StepFn`).
        init_extra: x_T -> the initial extra carry (e.g. an eps history); () if stateless.
        final_alpha_one: True to end at ab = 1, None to follow `sample(set_alpha_to_one=...)`.
        needs_rng: True if every sample is random (then `sample` requires `rng`).
    """

    step: StepFn
    init_extra: Callable[[jax.Array], Any] = lambda x: ()
    final_alpha_one: bool | None = None
    needs_rng: bool = False


def _eps(eps_fn: EpsFn, x: jax.Array, t: jax.Array) -> jax.Array:
    t_b = jnp.full((x.shape[0],), t, dtype=jnp.int32)  # [B]
    return eps_fn(x, t_b).astype(jnp.float32)


def _ddim(eps_fn, x, extra, inp, opts):
    noise = jax.random.normal(inp.key, x.shape, jnp.float32)
    x_prev, _ = ddim_step(
        x, _eps(eps_fn, x, inp.t), inp.alpha_t, inp.alpha_prev, opts.eta, noise, opts.clip_sample
    )
    return x_prev, extra


def _ddpm(eps_fn, x, extra, inp, opts):
    noise = jax.random.normal(inp.key, x.shape, jnp.float32)
    x_prev, _ = ddpm_step(
        x, _eps(eps_fn, x, inp.t), inp.alpha_t, inp.alpha_prev, noise, opts.clip_sample
    )
    return x_prev, extra


SAMPLERS: dict[str, SamplerSpec] = {
    "ddim": SamplerSpec(step=_ddim),
    "ddpm": SamplerSpec(step=_ddpm, final_alpha_one=True, needs_rng=True),
}


def sample(
    eps_fn: EpsFn,
    x_T: jax.Array,
    schedule: NoiseSchedule,
    sampler: str = "ddim",
    num_steps: int = 50,
    eta: float | jax.Array = 0.0,
    timestep_spacing: str = "leading",
    steps_offset: int = 0,
    rng: jax.Array | None = None,
    *,
    set_alpha_to_one: bool = False,
    clip_sample: float | None = None,
) -> jax.Array:
    """Runs a reverse-diffusion sampler from x_T to x_0 as one `lax.scan`.

    Jit it with `jax.jit(sample, static_argnames=STATIC_ARGNAMES)` (or close over the static
    arguments); `eta`, `rng`, `x_T` and `schedule` stay traced, so changing them does not recompile.

    Args:
        eps_fn: (x [B, ...], t int32 [B]) -> predicted noise [B, ...].
        x_T: starting noise [B, ...].
        schedule: the training noise schedule (T = schedule.num_timesteps).
        sampler: a key of `SAMPLERS` ("ddim", "ddpm"). DDPM visits the same timestep grid; pass
            num_steps=T with "leading" spacing for the full ancestral chain.
        num_steps: number of denoising steps (static), 1 <= num_steps <= T.
        eta: DDIM stochasticity (0 deterministic, 1 DDPM-like); traced; ignored by "ddpm".
        timestep_spacing: see `make_timesteps`.
        steps_offset: see `make_timesteps`.
        rng: PRNG key; required by "ddpm"; "ddim" falls back to a fixed key (only used if eta > 0).
        set_alpha_to_one: DDIM's last step ends at ab = 1 instead of alphas_cumprod[0] (as the
            diffusers DDIMScheduler flag; the paper code uses alphas_cumprod[0]).
        clip_sample: if set, clip every x0 prediction to [-clip_sample, clip_sample].

    Returns:
        float32 [B, ...] samples.

    Raises:
        ValueError: on an unknown sampler or spacing, bad step counts, or a missing rng.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; valid samplers: {tuple(SAMPLERS)}.")
    spec = SAMPLERS[sampler]
    if rng is None:
        if spec.needs_rng:
            raise ValueError(f"Sampler {sampler!r} is stochastic; pass rng=jax.random.key(...).")
        rng = jax.random.key(0)
    if isinstance(eta, (int, float)) and eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}.")

    ts = make_timesteps(schedule.num_timesteps, num_steps, timestep_spacing, steps_offset)  # [N]
    ac = schedule.alphas_cumprod  # [T]
    end_at_one = set_alpha_to_one if spec.final_alpha_one is None else spec.final_alpha_one
    final_alpha = jnp.ones((1,), jnp.float32) if end_at_one else ac[:1]
    ts_prev = np.append(ts[1:], -1).astype(np.int32)  # [N]
    inputs = StepInput(
        index=jnp.arange(num_steps, dtype=jnp.int32),
        t=jnp.asarray(ts),
        t_prev=jnp.asarray(ts_prev),
        alpha_t=ac[ts],
        alpha_prev=jnp.concatenate([ac[ts[1:]], final_alpha]),
        key=jax.random.split(rng, num_steps),
    )
    opts = SamplerOptions(eta=jnp.asarray(eta, jnp.float32), clip_sample=clip_sample)
    x = x_T.astype(jnp.float32)

    def body(carry, inp):
        x, extra = carry
        return spec.step(eps_fn, x, extra, inp, opts), None

    (x, _), _ = jax.lax.scan(body, (x, spec.init_extra(x)), inputs)
    return x
