"""Writes a Stable Diffusion workdir (converted, trained or fine-tuned) as a diffusers folder.

The folder is what `StableDiffusionPipeline.from_pretrained` (or the inpainting pipeline, for
"hybrid" models) loads:

  model_index.json
  unet/          UNet2DConditionModel: the denoiser's (EMA) weights
  vae/           AutoencoderKL, with the workdir's scale factor as `scaling_factor`
  text_encoder/  CLIPTextModel; a context taken `k` layers before the last (`clip_skip`, or SD 2's
                 "penultimate" OpenCLIP layer) becomes a model without its last `k` layers, which
                 gives the same context (the final LayerNorm follows either way)
  tokenizer/     the workdir's tokenizer files, as they are
  scheduler/     the workdir's schedule, prediction type and timestep spacing, as the scheduler
                 class of its default sampler (DDIM, PNDM, DDPM or DPM-Solver++)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import flax

from ldm_jax import interop
from ldm_jax.config import builders
from ldm_jax.config.model_config import model_config
from ldm_jax.interop import clip_weights
from ldm_jax.workdir import text_encoder
from ldm_jax.workdir.diffusers_scheduler import DIFFUSERS_VERSION, scheduler_config
from ldm_jax.workdir.reader import TrainedLDM, WorkdirError, load_trained_ldm


def _model_index(pipeline: str, scheduler: str) -> dict[str, Any]:
    return {
        "_class_name": pipeline,
        "_diffusers_version": DIFFUSERS_VERSION,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", scheduler],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def _drop_last_layers(config: Any, params: Any, k: int) -> tuple[Any, Any]:
    """The text encoder without its last `k` layers (their context, through the final norm)."""
    if k == 0:
        return config, params
    keep = config.num_layers - k
    params = flax.core.unfreeze(params)
    for i in range(keep, config.num_layers):
        del params[f"layers_{i}"]
    return dataclasses.replace(config, num_layers=keep), params


def _write_json(path: str, data: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


def export_sd_pipeline(workdir: str, out: str, trained: TrainedLDM | None = None) -> dict[str, Any]:
    """Writes the Stable Diffusion workdir `workdir` as a diffusers pipeline folder `out`.

    Args:
      workdir: a workdir whose model cross-attends to a CLIP text encoder it holds (converted
        with `python -m ldm_jax.convert`, or trained/fine-tuned from one).
      out: the folder to write (created; existing part folders are replaced).
      trained: the workdir's weights if already loaded (e.g. with a LoRA merged in).

    Returns:
      {"out", "pipeline", "scheduler"}.

    Raises:
      WorkdirError: the workdir holds no Stable Diffusion model (no text encoder weights).
    """
    trained = load_trained_ldm(workdir) if trained is None else trained
    config = trained.config
    model = model_config(config)
    cond = model.get("cond_stage") or {}
    if not text_encoder.has_text_encoder_weights(cond):
        raise WorkdirError(
            f"{workdir} holds no Stable Diffusion model (its cond stage is "
            f"{cond.get('kind', 'none')!r}, with no CLIP text encoder folder); export writes "
            "Stable Diffusion pipelines. For other models write the U-Net and the autoencoder "
            "with ldm_jax.interop.export_diffusers."
        )
    text_dir, tokenizer_dir = text_encoder.clip_folders(workdir, cond)
    os.makedirs(out, exist_ok=True)
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        shutil.rmtree(os.path.join(out, part), ignore_errors=True)
    side = int(model["unet"]["image_size"])
    unet = builders.build_denoiser(config).diffusion_model
    interop.export_diffusers(
        unet, trained.ldm_params["diffusion_model"], os.path.join(out, "unet"), sample_size=side
    )
    ae = builders.build_autoencoder(config)
    interop.export_diffusers(
        ae,
        trained.ae_params,
        os.path.join(out, "vae"),
        scaling_factor=trained.scale_factor,
        sample_size=int(config.data.image_size),
    )
    text_config, text_params = clip_weights.load_clip_text(text_dir)
    text_config, text_params = _drop_last_layers(
        text_config, text_params, text_encoder.skipped_layers(cond)
    )
    clip_weights.save_clip_text(text_config, text_params, os.path.join(out, "text_encoder"))
    shutil.copytree(tokenizer_dir, os.path.join(out, "tokenizer"))
    scheduler = scheduler_config(config)
    os.makedirs(os.path.join(out, "scheduler"))
    _write_json(os.path.join(out, "scheduler", "scheduler_config.json"), scheduler)
    hybrid = model.get("conditioning_key") == "hybrid"
    pipeline = "StableDiffusionInpaintPipeline" if hybrid else "StableDiffusionPipeline"
    _write_json(
        os.path.join(out, "model_index.json"), _model_index(pipeline, scheduler["_class_name"])
    )
    return {"out": out, "pipeline": pipeline, "scheduler": scheduler["_class_name"]}
