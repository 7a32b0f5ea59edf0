"""Image generation: (guided) latent sampling with any conditioning, then the first-stage decoder.

`make_sampler` is the general program (condition y, optional unconditional y for classifier-free
guidance, latent shape); `make_generate_fn` is its class-label form that the trainers and the
evaluator use.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ldm_jax import diffusion
from ldm_jax.config import builders
from ldm_jax.models.conditioning import ClassEmbedder
from ldm_jax.models.factory import FirstStage, has_deterministic_latents
from ldm_jax.models.latent_denoiser import LatentDenoiser
from ldm_jax.parallel.compile_options import top_level_jit

# (ae_params, ldm_params, labels [B], rng, guidance_scale, eta, scale_factor) -> images
GenerateFn = Callable[..., jax.Array]
# (ae_params, ldm_params, cond, uncond, rng, guidance_scale, eta, scale_factor, shape,
#  [x_init, mask, x_known]) -> images
SampleFn = Callable[..., jax.Array]


def decode_latents(ae: FirstStage, ae_params: Any, z: jax.Array) -> jax.Array:
    """Unscaled latents [B, h, w, c] -> images [B, H, W, C] (VQ latents are quantised first;
    the identity first stage returns them as they are)."""
    if has_deterministic_latents(ae):
        return ae.apply({"params": ae_params}, z, method=ae.decode_latent)
    return ae.apply({"params": ae_params}, z, method=ae.decode)


def encode_images(ae: FirstStage, ae_params: Any, x: jax.Array) -> jax.Array:
    """Images [B, H, W, C] in [-1, 1] -> unscaled latents (KL: posterior mean; VQ: before
    quantisation; identity: the images), as the reference `encode` of a first-stage condition."""
    if has_deterministic_latents(ae):
        return ae.apply({"params": ae_params}, x, method=ae.encode_to_prequant)
    return ae.apply({"params": ae_params}, x, method=ae.encode).mean


def inpainting_condition(
    ae: FirstStage, ae_params: Any, images: jax.Array, mask: jax.Array, f: int
) -> jax.Array:
    """The paper's inpainting condition [B, h, w, c + 1]: the unscaled latent (the reference's
    first-stage `encode`) of the image with the masked pixels black (-1), then the mask at every
    f-th pixel in [-1, 1]. images [B, H, W, C] in [-1, 1]; mask [B, H, W, 1], 1 = fill in."""
    masked = (1.0 - mask) * (images + 1.0) - 1.0
    latent = jax.lax.stop_gradient(encode_images(ae, ae_params, masked))  # [B, h, w, c]
    small = mask[:, ::f, ::f] * 2.0 - 1.0  # [B, h, w, 1]
    return jnp.concatenate([latent, small.astype(latent.dtype)], axis=-1)


def sd_inpainting_condition(
    ae: FirstStage,
    ae_params: Any,
    images: jax.Array,
    mask: jax.Array,
    f: int,
    scale_factor: float | jax.Array,
) -> jax.Array:
    """Stable Diffusion inpainting's concat channels [B, h, w, 1 + c]: the mask in {0, 1} at every
    f-th pixel, then the scaled latent of the image with the masked pixels 0 (runwayml's
    `LatentInpaintDiffusion`)."""
    masked = images * (1.0 - mask)
    latent = jax.lax.stop_gradient(encode_images(ae, ae_params, masked)) * scale_factor
    small = mask[:, ::f, ::f]  # [B, h, w, 1]
    return jnp.concatenate([small.astype(latent.dtype), latent], axis=-1)


TEXT_CONTEXT_LENGTH = 77  # tokens of Stable Diffusion's CLIP context (and its stand-in)


def fixed_text_context(captions: Sequence[str], length: int, dim: int) -> np.ndarray:
    """A deterministic stand-in for a frozen text encoder: one fixed embedding per caption.

    The SD presets' :tiny variants, which hold no CLIP/OpenCLIP weights, cross-attend to these
    (imported Stable Diffusion workdirs use their own text encoder). Caption s maps to standard
    normal tokens drawn with the seed SHA-256(s) (so equal captions share an embedding, and the
    empty caption "" is the unconditional one), scaled by 1/sqrt(dim). They carry the caption's
    identity, not its meaning.

    Returns:
      float32 [N, length, dim].
    """
    out = np.empty((len(captions), length, dim), np.float32)
    for i, caption in enumerate(captions):
        seed = int.from_bytes(hashlib.sha256(caption.encode("utf-8")).digest()[:8], "little")
        rng = np.random.default_rng(seed)
        out[i] = rng.standard_normal((length, dim), dtype=np.float32) / np.sqrt(dim)
    return out


def null_label(denoiser: LatentDenoiser) -> int | None:
    """The class label of the unconditional branch, or None when the model has none."""
    cond = denoiser.cond_stage_model
    if denoiser.conditioning_key == "crossattn" and isinstance(cond, ClassEmbedder):
        return cond.num_classes if cond.add_null_class else None
    return None


def timestep_grid(
    config: ml_collections.ConfigDict,
    timestep_spacing: str | None = None,
    steps_offset: int | None = None,
) -> tuple[str, int]:
    """(timestep spacing, steps offset) of sampling: the given values, else the config's
    `sample.timestep_spacing` / `sample.steps_offset`, else "leading" and 1 (the paper's code).

    "leading" starts fewer steps at a lower first timestep (e.g. 801 for DDIM at 5 steps, 981
    at 50); "trailing" starts every step count at T - 1 (`diffusion/timesteps.py`).
    """
    s = config.get("sample") or {}
    spacing = timestep_spacing or s.get("timestep_spacing", None) or "leading"
    offset = steps_offset if steps_offset is not None else s.get("steps_offset", None)
    return str(spacing), int(1 if offset is None else offset)


def make_sampler(
    config: ml_collections.ConfigDict,
    sampler: str,
    num_steps: int,
    timestep_spacing: str | None = None,
    steps_offset: int | None = None,
    strength: float = 1.0,
) -> SampleFn:
    """Builds a jitted sampler; guidance scale, eta and scale factor are traced (no recompile).

    `timestep_spacing` and `steps_offset` default to the config's `sample` settings
    (`timestep_grid`), so every command samples a workdir on the grid it was made for.

    `strength` < 1 (img2img, with `x_init`) runs the last int(num_steps * strength) steps of the
    grid from x_init noised to the first of them (`diffusion.sample`).

    Returns:
      sample(ae_params, ldm_params, cond, uncond, rng, guidance_scale, eta, scale_factor, shape,
      x_init=None, mask=None, x_known=None, guidance_rescale=0.0, noise=None)
      -> images [B, H, W, C] float32 in [-1, 1], where
      `shape` (static) is the latent shape (B, h, w, c), `cond` the condition y of the denoiser
      (a pytree with leading batch B, or None) and `uncond` the y of the unconditional branch
      (leading batch 1 or B), or None for no classifier-free guidance. For "hybrid" models y is
      {"context": [B, L, D], "concat": [B, h, w, c']}. The optional latents are scaled (times
      scale_factor), batch 1 or B: `x_init` [B, h, w, c] the img2img start (needed for
      strength < 1), `mask` [B, h, w, 1] 1 where `x_known` [B, h, w, c] is kept every step
      (masked sampling, the paper's inpainting with models trained without masks).
      `guidance_rescale` (traced when given) is Lin et al.'s rescale of the guided output, as
      diffusers' `guidance_rescale`; `noise` [B, h, w, c] replaces the initial latent drawn from
      `rng` (e.g. to reproduce another library's images from its latents).
    """
    timestep_spacing, steps_offset = timestep_grid(config, timestep_spacing, steps_offset)
    ae = builders.build_autoencoder(config)
    denoiser: LatentDenoiser = builders.build_denoiser(config)
    schedule = builders.build_schedule(config)

    @functools.partial(top_level_jit, static_argnames="shape")
    def sample(
        ae_params,
        ldm_params,
        cond,
        uncond,
        rng,
        guidance_scale,
        eta,
        scale_factor,
        shape,
        x_init=None,
        mask=None,
        x_known=None,
        guidance_rescale=0.0,
        noise=None,
    ):
        noise_rng, sample_rng = jax.random.split(rng)
        if x_init is not None:
            x_init = jnp.broadcast_to(x_init, shape)  # [B, h, w, c]
        if x_known is not None:
            x_known = jnp.broadcast_to(x_known, shape)  # [B, h, w, c]
        if noise is None:
            z_T = jax.random.normal(noise_rng, shape, jnp.float32)  # [B, h, w, c]
        else:
            z_T = jnp.broadcast_to(jnp.asarray(noise, jnp.float32), shape)

        def model_fn(x, t, y):
            if denoiser.conditioning_key == "hybrid":
                return denoiser.apply(
                    {"params": ldm_params}, x, t, y["context"], concat=y["concat"]
                )
            return denoiser.apply({"params": ldm_params}, x, t, y)

        if uncond is None:
            eps_fn = lambda x, t: model_fn(x, t, cond)
        else:
            eps_fn = diffusion.classifier_free_guidance(
                model_fn, cond, uncond, guidance_scale, guidance_rescale
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
            x_init=x_init,
            strength=strength,
            mask=mask,
            x_known=x_known,
        )
        images = decode_latents(ae, ae_params, z0 / scale_factor)
        return jnp.clip(images, -1.0, 1.0)

    return sample


def make_generate_fn(
    config: ml_collections.ConfigDict,
    sampler: str,
    num_steps: int,
    timestep_spacing: str | None = None,
    steps_offset: int | None = None,
) -> GenerateFn:
    """Builds a jitted class-label (or unconditional) generator.

    The sampler runs on z / scale_factor-normalised latents; the null class of the condition
    encoder is the unconditional branch of classifier-free guidance (a scale of 1 disables it;
    models without a null class sample unguided). Unconditional models ignore the labels except
    for their number.

    Returns:
      generate(ae_params, ldm_params, labels [B] int32, rng, guidance_scale, eta, scale_factor)
      -> images [B, H, W, C] float32 in [-1, 1].
    """
    sample = make_sampler(config, sampler, num_steps, timestep_spacing, steps_offset)
    denoiser = builders.build_denoiser(config)
    h, w, c = builders.latent_shape(config)
    null = null_label(denoiser)
    conditional = denoiser.conditioning_key is not None

    @top_level_jit
    def generate(ae_params, ldm_params, labels, rng, guidance_scale, eta, scale_factor):
        labels = jnp.asarray(labels, jnp.int32)
        cond = labels if conditional else None
        uncond = None if null is None else jnp.full((1,), null, jnp.int32)
        shape = (labels.shape[0], h, w, c)
        return sample(
            ae_params, ldm_params, cond, uncond, rng, guidance_scale, eta, scale_factor, shape
        )

    return generate
