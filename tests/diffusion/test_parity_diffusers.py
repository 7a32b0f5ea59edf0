"""Parity of the samplers against diffusers' PyTorch schedulers on one analytic denoiser.

Both sides run the same model (tests/diffusion/analytic.py, reading ab_t from one float32 table)
from the same x_T; final samples must agree to 1e-4 (max abs error).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler

from ldm_jax.diffusion import NoiseSchedule, img2img_start_index, sample
from tests.diffusion import analytic

TOL = 1e-4
REFERENCE = {"ddim": DDIMScheduler, "plms": PNDMScheduler, "dpmpp_2m": DPMSolverMultistepScheduler}
# Scheduler settings that define each of our samplers (the rest comes from the test case).
FIXED = {
    "ddim": dict(clip_sample=False),
    "plms": dict(skip_prk_steps=True),
    "dpmpp_2m": dict(algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True),
}


@functools.cache
def schedule(kind: str, zero_snr: bool = False) -> tuple[NoiseSchedule, np.ndarray]:
    """Our schedule and its float32 alphas_cumprod table (the analytic model reads this)."""
    b0, b1 = analytic.BETAS[kind]
    s = NoiseSchedule.create(kind, 1000, b0, b1, rescale_zero_snr=zero_snr)
    return s, np.asarray(s.alphas_cumprod)


@functools.cache
def ours(sampler, num_steps, spacing, offset, prediction_type, alpha_one, strength):
    """A jitted sampler; the schedule and the model's table are traced (shared across kinds)."""

    def run(sched, table, x_T, x_init):
        fn = lambda x, t: analytic.model_output(jnp, table, x, t, prediction_type)
        return sample(
            fn,
            x_T,
            sched,
            sampler,
            num_steps,
            timestep_spacing=spacing,
            steps_offset=offset,
            prediction_type=prediction_type,
            set_alpha_to_one=alpha_one,
            x_init=x_init,
            strength=strength,
        )

    return jax.jit(run)


def reference(
    sampler,
    kind,
    num_steps,
    spacing,
    offset,
    prediction_type,
    alpha_one,
    strength,
    zero_snr,
    x_T,
    x_init,
):
    """The diffusers loop (as its pipelines run it, img2img truncation included)."""
    b0, b1 = analytic.BETAS[kind]
    kw = dict(FIXED[sampler], timestep_spacing=spacing, steps_offset=offset)
    if sampler != "dpmpp_2m":
        kw["set_alpha_to_one"] = alpha_one
    if zero_snr:
        kw["rescale_betas_zero_snr"] = True
    sch = REFERENCE[sampler](
        num_train_timesteps=1000,
        beta_start=b0,
        beta_end=b1,
        beta_schedule=kind,
        prediction_type=prediction_type,
        **kw,
    )
    sch.set_timesteps(num_steps)
    timesteps, x = sch.timesteps, torch.from_numpy(x_T)
    if x_init is not None:
        start = img2img_start_index(num_steps, strength)
        timesteps = timesteps[start:]
        if hasattr(sch, "set_begin_index"):
            sch.set_begin_index(start)
        x = sch.add_noise(torch.from_numpy(x_init), x, timesteps[:1])
    table = torch.from_numpy(schedule(kind, zero_snr)[1].copy())
    for t in timesteps:
        t_b = torch.full((x.shape[0],), int(t), dtype=torch.long)
        out = analytic.model_output(torch, table, x, t_b, prediction_type)
        x = sch.step(out, t, x).prev_sample
    return x.numpy()


def max_error(
    sampler,
    kind,
    num_steps,
    spacing="leading",
    offset=0,
    prediction_type="epsilon",
    alpha_one=False,
    strength=1.0,
    zero_snr=False,
    img2img=False,
):
    x_T = analytic.x_T()
    x_init = analytic.x_T(seed=1) * 0.5 + 0.3 if img2img else None
    sched, table = schedule(kind, zero_snr)
    fn = ours(sampler, num_steps, spacing, offset, prediction_type, alpha_one, strength)
    got = np.asarray(fn(sched, jnp.asarray(table), jnp.asarray(x_T), x_init))
    want = reference(
        sampler,
        kind,
        num_steps,
        spacing,
        offset,
        prediction_type,
        alpha_one,
        strength,
        zero_snr,
        x_T,
        x_init,
    )
    assert got.shape == want.shape and np.all(np.isfinite(got))
    return float(np.max(np.abs(got - want)))


# Stable Diffusion's settings for DDIM/PLMS; DPM-Solver++ with its default linspace grid.
SD_STYLE = {
    "ddim": dict(spacing="leading", offset=1),
    "plms": dict(spacing="leading", offset=1),
    "dpmpp_2m": dict(spacing="linspace"),
}


@pytest.mark.parametrize("kind", ["scaled_linear", "linear"])
@pytest.mark.parametrize("num_steps", [10, 25, 50])
@pytest.mark.parametrize("sampler", ["ddim", "plms", "dpmpp_2m"])
def test_matches_diffusers(sampler, num_steps, kind):
    err = max_error(sampler, kind, num_steps, **SD_STYLE[sampler])
    assert err < TOL, f"{sampler} {kind} {num_steps} steps: max abs error {err:.2e}"


@pytest.mark.parametrize(
    "sampler,num_steps,kwargs",
    [
        ("ddim", 10, dict(spacing="trailing", alpha_one=True)),
        ("ddim", 25, dict(prediction_type="sample", alpha_one=True)),
        ("ddim", 10, dict(spacing="trailing", prediction_type="v_prediction", zero_snr=True)),
        ("plms", 10, dict(spacing="trailing", alpha_one=True)),
        ("dpmpp_2m", 10, dict(spacing="leading", offset=1)),
        ("dpmpp_2m", 25, dict(spacing="trailing", prediction_type="v_prediction", zero_snr=True)),
        ("dpmpp_2m", 10, dict(spacing="linspace", prediction_type="sample")),
        ("ddim", 25, dict(offset=1, img2img=True, strength=0.6)),
        ("dpmpp_2m", 10, dict(spacing="linspace", img2img=True, strength=0.55)),
    ],
)
def test_variants_match_diffusers(sampler, num_steps, kwargs):
    """Other spacings, final alphas, x0/v targets, zero terminal SNR and img2img truncation."""
    err = max_error(sampler, "scaled_linear", num_steps, **kwargs)
    assert err < TOL, f"{sampler} {num_steps} {kwargs}: max abs error {err:.2e}"


@pytest.mark.parametrize(
    "sampler,num_steps", [("ddim", 1), ("plms", 1), ("plms", 2), ("plms", 3), ("dpmpp_2m", 2)]
)
def test_few_steps_match_diffusers(sampler, num_steps):
    """The warm-up branches of the multistep methods (order changes at the first/last steps)."""
    err = max_error(sampler, "scaled_linear", num_steps, "leading", 1)
    assert err < TOL, f"{sampler} {num_steps}: max abs error {err:.2e}"
