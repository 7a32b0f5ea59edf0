"""ldm_jax.diffusion: noise schedules, training objectives and samplers (pure JAX, no network)."""

from ldm_jax.diffusion.guidance import classifier_free_guidance
from ldm_jax.diffusion.objectives import (
    eps_from_model_output,
    eps_mse_loss,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_sample,
    training_target,
)
from ldm_jax.diffusion.samplers import (
    SAMPLERS,
    STATIC_ARGNAMES,
    ddim_step,
    ddpm_posterior,
    ddpm_step,
    make_timesteps,
    sample,
)
from ldm_jax.diffusion.schedules import NoiseSchedule

__all__ = [
    "SAMPLERS",
    "STATIC_ARGNAMES",
    "NoiseSchedule",
    "classifier_free_guidance",
    "ddim_step",
    "ddpm_posterior",
    "ddpm_step",
    "eps_from_model_output",
    "eps_mse_loss",
    "make_timesteps",
    "predict_eps_from_x0",
    "predict_x0_from_eps",
    "q_sample",
    "sample",
    "training_target",
]
