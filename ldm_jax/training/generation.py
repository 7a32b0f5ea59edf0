"""Class-conditional image generation: guided latent sampling, then the first-stage decoder."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from ldm_jax import diffusion
from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.models.latent_denoiser import LatentDenoiser
from ldm_jax.training import builders

# (ae_params, ldm_params, labels [B], rng, guidance_scale, eta, scale_factor) -> images
GenerateFn = Callable[..., jax.Array]


def make_generate_fn(
    config: ml_collections.ConfigDict,
    sampler: str,
    num_steps: int,
    timestep_spacing: str = "leading",
    steps_offset: int = 1,
) -> GenerateFn:
    """Builds a jitted generator; guidance scale, eta and scale factor are traced (no recompile).

    The sampler runs on z / scale_factor-normalised latents; the null class of the condition
    encoder is the unconditional branch of classifier-free guidance (a scale of 1 disables it).

    Returns:
      generate(ae_params, ldm_params, labels [B] int32, rng, guidance_scale, eta, scale_factor)
      -> images [B, H, W, C] float32 in [-1, 1].
    """
    ae: AutoencoderKL = builders.build_autoencoder(config)
    denoiser: LatentDenoiser = builders.build_denoiser(config)
    schedule = builders.build_schedule(config)
    h, w, c = builders.latent_shape(config)
    null_class = config.data.num_classes

    @jax.jit
    def generate(ae_params, ldm_params, labels, rng, guidance_scale, eta, scale_factor):
        noise_rng, sample_rng = jax.random.split(rng)
        z_T = jax.random.normal(noise_rng, (labels.shape[0], h, w, c), jnp.float32)

        def model_fn(x, t, y):
            return denoiser.apply({"params": ldm_params}, x, t, y)

        if denoiser.cond_stage_model is None:
            eps_fn = lambda x, t: model_fn(x, t, None)
        else:
            uncond = jnp.full((1,), null_class, jnp.int32)
            eps_fn = diffusion.classifier_free_guidance(
                model_fn, labels.astype(jnp.int32), uncond, guidance_scale
            )
        z0 = diffusion.sample(
            eps_fn,
            z_T,
            schedule,
            sampler=sampler,
            num_steps=num_steps,
            eta=eta,
            timestep_spacing=timestep_spacing,
            steps_offset=steps_offset,
            rng=sample_rng,
            prediction_type=config.diffusion.prediction_type,
        )
        images = ae.apply({"params": ae_params}, z0 / scale_factor, method=ae.decode)
        return jnp.clip(images, -1.0, 1.0)

    return generate
