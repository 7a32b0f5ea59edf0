"""`sample`: each reverse-diffusion sampler as one `jax.lax.scan`, with guidance, img2img, masks.

The timestep grid and the sampler's per-iteration tables are numpy constants built from static
arguments (`STATIC_ARGNAMES`); everything else (x_T, the schedule, eta, guidance scale and rescale,
rng, the img2img input and the mask) is traced, so under `jax.jit` one program serves them all.
Sampler families live in `ddim.py` (DDIM, DDPM), `plms.py` and `dpm_solver.py`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.diffusion.ddim import DDIM, DDPM
from ldm_jax.diffusion.dpm_solver import DPMPP_2M
from ldm_jax.diffusion.guidance import guide
from ldm_jax.diffusion.objectives import PREDICTION_TYPES, split_model_output
from ldm_jax.diffusion.plms import PLMS
from ldm_jax.diffusion.sampler_api import Prediction, SamplerOptions, SamplerSpec, StepInput
from ldm_jax.diffusion.schedules import NoiseSchedule
from ldm_jax.diffusion.timesteps import img2img_start_index

# (x [B, ...], t int32 [B]) -> model output [B, ...], or the pair (cond, uncond) when guiding.
EpsFn = Callable[[jax.Array, jax.Array], jax.Array]

SAMPLERS: dict[str, SamplerSpec] = {
    "ddim": DDIM,
    "ddpm": DDPM,
    "plms": PLMS,
    "dpmpp_2m": DPMPP_2M,
}
# Arguments of `sample` that must be static under `jax.jit`.
STATIC_ARGNAMES = (
    "eps_fn",
    "sampler",
    "num_steps",
    "timestep_spacing",
    "steps_offset",
    "prediction_type",
    "set_alpha_to_one",
    "clip_sample",
    "strength",
)


def sampler_timesteps(
    sampler: str,
    num_train_timesteps: int,
    num_steps: int,
    timestep_spacing: str = "leading",
    steps_offset: int = 0,
    strength: float = 1.0,
) -> np.ndarray:
    """The grid [n] that `sample` visits (after img2img truncation when strength < 1)."""
    spec = _spec(sampler)
    grid = spec.timesteps(num_train_timesteps, num_steps, timestep_spacing, steps_offset)
    return grid[img2img_start_index(num_steps, strength) :]


def _spec(sampler: str) -> SamplerSpec:
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; valid samplers: {tuple(SAMPLERS)}.")
    return SAMPLERS[sampler]


def _validate(spec, sampler, rng, eta, prediction_type, x_T, x_init, strength, mask, x_known):
    if rng is None and spec.needs_rng:
        raise ValueError(f"Sampler {sampler!r} is stochastic; pass rng=jax.random.key(...).")
    if isinstance(eta, (int, float)) and eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}.")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"Unknown prediction_type {prediction_type!r}; valid: {PREDICTION_TYPES}.")
    if x_init is None and strength != 1.0:
        raise ValueError(f"strength={strength} is for img2img: pass x_init as well.")
    if x_init is not None and x_init.shape != x_T.shape:
        raise ValueError(f"x_init {x_init.shape} must have the shape of x_T {x_T.shape}.")
    if (mask is None) != (x_known is None):
        raise ValueError("mask and x_known go together: pass both or neither.")
    if x_known is not None and x_known.shape != x_T.shape:
        raise ValueError(f"x_known {x_known.shape} must have the shape of x_T {x_T.shape}.")
    if mask is not None:
        try:
            ok = np.broadcast_shapes(mask.shape, x_T.shape) == x_T.shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"mask {mask.shape} does not broadcast to x_T {x_T.shape}.")


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
    guidance_scale: float | jax.Array | None = None,
    guidance_rescale: float | jax.Array = 0.0,
    prediction_type: str = "epsilon",
    set_alpha_to_one: bool = False,
    clip_sample: float | None = None,
    x_init: jax.Array | None = None,
    strength: float = 1.0,
    mask: jax.Array | None = None,
    x_known: jax.Array | None = None,
) -> jax.Array:
    """Runs a reverse-diffusion sampler from x_T to x_0 as one `lax.scan`.

    Jit it with `jax.jit(sample, static_argnames=STATIC_ARGNAMES)` (or close over the static
    arguments). One compiled program per distinct static tuple (e.g. per num_steps); eta,
    guidance_scale, guidance_rescale, rng, x_T, x_init, mask, x_known and the schedule are traced.
    The model is traced once: each scan iteration makes exactly one `eps_fn` call.

    Args:
        eps_fn: (x [B, ...], t int32 [B]) -> model output [B, ...] (eps, x0 or v, see
            prediction_type). When guidance_scale is given it must instead return the pair
            (cond_output, uncond_output), e.g. `guidance_pair_fn(model_fn, cond, uncond)`.
        x_T: starting noise [B, ...] (with x_init: the noise that is added to x_init).
        schedule: the training noise schedule (T = schedule.num_timesteps).
        sampler: a key of `SAMPLERS`: "ddim"; "ddpm" (ancestral; num_steps=T with "leading"
            spacing is the full chain); "plms" (the paper's PLMS = diffusers PNDM with
            skip_prk_steps, num_steps + 1 model calls); "dpmpp_2m" (DPM-Solver++(2M) on diffusers'
            DPM-Solver grid, ending at ab = 1).
        num_steps: number of denoising steps (static), 1 <= num_steps <= T.
        eta: DDIM stochasticity (0 deterministic, 1 DDPM-like); traced; used by "ddim" only.
        timestep_spacing: "leading", "trailing" or "linspace" (see `timesteps.py`). Every
            sampler steps from one grid point to the next, as the paper code does; diffusers'
            DDIM/PNDM step to t - T // num_steps instead, the same point for "leading" (and for
            "trailing" when num_steps divides T) but not for "linspace".
        steps_offset: added to the "leading" grid (Stable Diffusion and the paper code use 1).
        rng: PRNG key; required by "ddpm"; otherwise a fixed key stands in (only DDIM with
            eta > 0 draws noise).
        guidance_scale: if set, classifier-free guidance with this (traced) scale on the pair
            that eps_fn returns (see `guidance.guide`).
        guidance_rescale: guidance rescale factor in [0, 1] (Lin et al.; traced).
        prediction_type: what eps_fn predicts: "epsilon", "sample" (x0) or "v_prediction".
        set_alpha_to_one: DDIM/PLMS end at ab = 1 instead of alphas_cumprod[0] (diffusers'
            flag; the paper code and Stable Diffusion use alphas_cumprod[0]). DDPM and
            DPM-Solver++ always end at ab = 1.
        clip_sample: if set, clip every x0 prediction to [-clip_sample, clip_sample] (PLMS then
            re-derives its eps from the clipped x0).
        x_init: img2img input [B, ...]: sampling starts from q(x_t | x_init) with noise x_T at
            the first timestep of the truncated grid, as diffusers' img2img.
        strength: (static) fraction of the grid img2img runs: the last
            min(int(num_steps * strength), num_steps) steps (diffusers' `strength`).
        mask: [B, ...] broadcastable to x_T, 1 where x_known is kept. Before every model call
            the kept region is replaced by x_known noised to the current timestep with the
            noise x_T (the paper's DDIM inpainting-by-mask; diffusers re-uses the initial noise
            the same way), and once more at the final alpha after the last step.
        x_known: [B, ...] the clean latent kept under mask.

    Returns:
        float32 [B, ...] samples.

    Raises:
        ValueError: on an unknown sampler, spacing or prediction type, bad step counts or
            strength, a missing rng, or mismatched shapes.
    """
    spec = _spec(sampler)
    _validate(spec, sampler, rng, eta, prediction_type, x_T, x_init, strength, mask, x_known)
    rng = jax.random.key(0) if rng is None else rng
    grid = sampler_timesteps(
        sampler, schedule.num_timesteps, num_steps, timestep_spacing, steps_offset, strength
    )  # [n]
    alpha_of, final_alpha = _alpha_lookup(spec, schedule, set_alpha_to_one)
    opts = SamplerOptions(
        eta=jnp.asarray(eta, jnp.float32),
        clip_sample=clip_sample,
        eta_is_zero=isinstance(eta, (int, float)) and eta == 0,
    )
    inputs = _step_inputs(spec, spec.plan(grid), alpha_of, opts, rng)
    noise = x_T.astype(jnp.float32)  # [B, ...]
    predict = _predictor(
        eps_fn, x_T.shape[0], guidance_scale, guidance_rescale, prediction_type, clip_sample
    )

    def keep_known(x: jax.Array, alpha: jax.Array) -> jax.Array:
        if mask is None:
            return x
        known_t = jnp.sqrt(alpha) * x_known.astype(jnp.float32) + jnp.sqrt(1.0 - alpha) * noise
        m = mask.astype(jnp.float32)  # broadcasts to [B, ...]
        return m * known_t + (1.0 - m) * x

    x = noise  # [B, ...]
    if x_init is not None:
        a0 = alpha_of(grid[:1])[0]
        x = jnp.sqrt(a0) * x_init.astype(jnp.float32) + jnp.sqrt(1.0 - a0) * noise

    def body(carry, inp):
        x, extra = carry
        x = keep_known(x, inp.alpha)
        return spec.step(predict, x, extra, inp, opts), None

    (x, _), _ = jax.lax.scan(body, (x, spec.init_extra(x)), inputs)
    return keep_known(x, final_alpha)


def _alpha_lookup(spec, schedule: NoiseSchedule, set_alpha_to_one: bool):
    """(timesteps int [K] with -1 = the final alpha -> alphas_cumprod float32 [K], final)."""
    ac = schedule.alphas_cumprod  # [T]
    if spec.zero_alpha_floor is not None:
        ac = jnp.where(ac == 0, spec.zero_alpha_floor, ac)
    end_at_one = set_alpha_to_one if spec.final_alpha_one is None else spec.final_alpha_one
    final_alpha = jnp.ones((), jnp.float32) if end_at_one else ac[0]

    def alpha_of(ts: np.ndarray) -> jax.Array:
        return jnp.where(jnp.asarray(ts >= 0), ac[np.maximum(ts, 0)], final_alpha)

    return alpha_of, final_alpha


def _step_inputs(spec, plan, alpha_of, opts: SamplerOptions, rng: jax.Array) -> StepInput:
    """The scanned per-iteration inputs of a sampler plan (K iterations)."""
    num_iters = len(plan.t_model)
    # Keys only for samplers that draw noise (threefry adds compile time to every program).
    if spec.needs_rng or (spec.eta_noise and not opts.eta_is_zero):
        keys = jax.random.split(rng, num_iters)
    else:
        keys = jnp.zeros((num_iters,), jnp.uint32)
    return StepInput(
        index=jnp.arange(num_iters, dtype=jnp.int32),
        t=jnp.asarray(plan.t_model, jnp.int32),
        alpha=alpha_of(plan.t_model),
        alpha_from=alpha_of(plan.t_from),
        alpha_to=alpha_of(plan.t_to),
        key=keys,
        aux=jax.tree.map(jnp.asarray, plan.aux),
    )


def _predictor(
    eps_fn: EpsFn,
    batch: int,
    guidance_scale,
    guidance_rescale,
    prediction_type: str,
    clip_sample: float | None,
):
    """(x, StepInput) -> Prediction: one model call, guidance, x0/eps split and clipping."""

    def predict(x: jax.Array, inp: StepInput) -> Prediction:
        out = eps_fn(x, jnp.full((batch,), inp.t, dtype=jnp.int32))
        is_pair = isinstance(out, (tuple, list))
        if guidance_scale is None and is_pair:
            raise ValueError("eps_fn returned a pair: pass guidance_scale to guide with it.")
        if guidance_scale is not None:
            if not (is_pair and len(out) == 2):
                raise ValueError(
                    "With guidance_scale, eps_fn must return (cond_output, uncond_output); "
                    "see guidance_pair_fn."
                )
            out = guide(out[0], out[1], guidance_scale, guidance_rescale)
        x0, eps = split_model_output(out, x, inp.alpha, prediction_type)  # [B, ...] each
        if clip_sample is not None:
            x0 = jnp.clip(x0, -clip_sample, clip_sample)
        return Prediction(x0=x0, eps=eps)

    return predict
