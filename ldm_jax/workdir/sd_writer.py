"""Writes a Stable Diffusion pipeline (diffusers folder or original single file) as a workdir.

Besides what every imported workdir holds (`writer.write_workdir`: config.json, the first
stage's and the denoiser's checkpoints), a Stable Diffusion workdir holds its frozen text encoder
as a transformers `CLIPTextModel` folder (`text_encoder/`) and its BPE tokenizer (`tokenizer/`),
named by `config.model.cond_stage` ("frozen_clip" for CLIP and for a diffusers SD 2 encoder,
"frozen_openclip" with layer "penultimate" for an original SD 2 checkpoint's full OpenCLIP
tower). The scheduler's timestep spacing and offset become the sample defaults.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from ldm_jax.interop import clip_weights, model_spec
from ldm_jax.interop.diffusers_config import UnsupportedConfigError
from ldm_jax.interop.sd_pipeline import StableDiffusionParts
from ldm_jax.workdir import layout
from ldm_jax.workdir.diffusers_scheduler import sample_settings, scheduler_fields
from ldm_jax.workdir.writer import first_stage_spec, write_workdir


def sd_conditioning_key(in_channels: int, latent_channels: int) -> str:
    """ "crossattn" for text-to-image U-Nets, "hybrid" for the inpainting ones (z_t, the mask and
    the masked image's latent stacked: 2 c + 1 channels).

    Raises:
      UnsupportedConfigError: any other number of input channels.
    """
    if in_channels == latent_channels:
        return "crossattn"
    if in_channels == 2 * latent_channels + 1:
        return "hybrid"
    raise UnsupportedConfigError(
        f"A Stable Diffusion U-Net with {in_channels} input channels on {latent_channels}-channel "
        f"latents is neither text-to-image ({latent_channels}) nor inpainting "
        f"({2 * latent_channels + 1})."
    )


def write_sd_workdir(
    parts: StableDiffusionParts,
    workdir: str,
    source: dict[str, Any],
    cond_kind: str = "frozen_clip",
) -> ml_collections.ConfigDict:
    """Writes the pipeline `parts` as a sampleable (and fine-tunable) workdir; returns its config.

    Args:
      parts: the loaded pipeline (`interop.sd_pipeline.load_sd_folder`, or a single file).
      workdir: the folder to create.
      source: provenance, stored as `config.imported`.
      cond_kind: "frozen_clip" (the text encoder's last layer) or "frozen_openclip" (its
        penultimate layer, as the original SD 2 `FrozenOpenCLIPEmbedder`).

    Raises:
      UnsupportedConfigError: parts the workdir cannot express (named).
    """
    if cond_kind not in ("frozen_clip", "frozen_openclip"):
        raise ValueError(f"cond_kind must be frozen_clip or frozen_openclip, got {cond_kind!r}.")
    unet, ae = parts.unet, parts.vae
    in_channels = int(parts.unet_params["input_blocks_0_0"]["kernel"].shape[2])
    key = sd_conditioning_key(in_channels, ae.embed_dim)
    side = parts.unet_config.get("sample_size", 64)
    side = side[0] if isinstance(side, (list, tuple)) else side
    cond: dict[str, Any] = dict(
        max_length=parts.tokenizer.max_length,
        text_encoder=layout.TEXT_ENCODER_DIR,
        tokenizer=layout.TOKENIZER_DIR,
    )
    if cond_kind == "frozen_openclip":
        cond["layer"] = "penultimate"
    model = dict(
        first_stage=first_stage_spec(ae),
        unet=model_spec.unet_spec(unet, int(side), in_channels),
        cond_stage=model_spec.cond_stage_spec(None, cond_kind, **cond),
        conditioning_key=key,
    )
    config = write_workdir(
        workdir,
        model,
        parts.vae_params,
        {"diffusion_model": parts.unet_params},
        float(parts.vae_config.get("scaling_factor", 0.18215)),
        scheduler_fields(parts.scheduler_config),
        dict(source, pipeline=parts.pipeline),
        sample_settings=sample_settings(parts.scheduler_config),
    )
    clip_weights.save_clip_text(
        parts.text_config, parts.text_params, os.path.join(workdir, layout.TEXT_ENCODER_DIR)
    )
    parts.tokenizer.save(os.path.join(workdir, layout.TOKENIZER_DIR))
    return config
