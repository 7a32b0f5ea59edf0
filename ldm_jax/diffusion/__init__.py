"""ldm_jax.diffusion: noise schedules, training objectives and samplers (pure JAX, no network).

sched = NoiseSchedule.create("scaled_linear", 1000, 0.00085, 0.012, rescale_zero_snr=False)
z_t = q_sample(sched, z0, t, noise)                       # training: forward process
loss = weighted_mse_loss(pred, training_target(sched, z0, t, noise, "epsilon"), sched, t,
                         "min_snr")                       # [B]; or "simple" + original_elbo_weight
z0 = sample(eps_fn, z_T, sched, sampler="dpmpp_2m", num_steps=25)   # ddim | ddpm | plms | dpmpp_2m
z0 = sample(guidance_pair_fn(model_fn, cond, uncond), z_T, sched, guidance_scale=7.5,
            guidance_rescale=0.7, prediction_type="v_prediction")  # guided, traced scale
z0 = sample(eps_fn, noise, sched, x_init=z_src, strength=0.6)           # img2img
z0 = sample(eps_fn, z_T, sched, mask=keep, x_known=z_src)               # inpainting by mask
"""

from ldm_jax.diffusion.ddim import (
    ddim_step,
    ddim_update,
    ddpm_posterior,
    ddpm_step,
    ddpm_update,
)
from ldm_jax.diffusion.dpm_solver import dpmpp_2m_update
from ldm_jax.diffusion.guidance import (
    classifier_free_guidance,
    guidance_pair_fn,
    guide,
    rescale_guided,
)
from ldm_jax.diffusion.loss_weights import (
    WEIGHTINGS,
    loss_weight,
    lvlb_weights,
    min_snr_weight,
    snr,
    weighted_mse_loss,
)
from ldm_jax.diffusion.objectives import (
    PREDICTION_TYPES,
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
from ldm_jax.diffusion.plms import pndm_transfer
from ldm_jax.diffusion.sampler_api import SamplerSpec
from ldm_jax.diffusion.samplers import SAMPLERS, STATIC_ARGNAMES, sample, sampler_timesteps
from ldm_jax.diffusion.schedules import NoiseSchedule, rescale_zero_terminal_snr
from ldm_jax.diffusion.timesteps import (
    TIMESTEP_SPACINGS,
    dpm_solver_timesteps,
    img2img_start_index,
    make_timesteps,
)

__all__ = [
    "PREDICTION_TYPES",
    "SAMPLERS",
    "STATIC_ARGNAMES",
    "TIMESTEP_SPACINGS",
    "WEIGHTINGS",
    "NoiseSchedule",
    "SamplerSpec",
    "classifier_free_guidance",
    "ddim_step",
    "ddim_update",
    "ddpm_posterior",
    "ddpm_step",
    "ddpm_update",
    "dpm_solver_timesteps",
    "dpmpp_2m_update",
    "eps_from_model_output",
    "eps_mse_loss",
    "guidance_pair_fn",
    "guide",
    "img2img_start_index",
    "loss_weight",
    "lvlb_weights",
    "make_timesteps",
    "min_snr_weight",
    "pndm_transfer",
    "predict_eps_from_v",
    "predict_eps_from_x0",
    "predict_x0_from_eps",
    "predict_x0_from_v",
    "q_sample",
    "rescale_guided",
    "rescale_zero_terminal_snr",
    "sample",
    "sampler_timesteps",
    "snr",
    "split_model_output",
    "training_target",
    "velocity",
    "weighted_mse_loss",
    "x0_from_model_output",
]
