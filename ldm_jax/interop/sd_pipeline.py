"""Reads a diffusers Stable Diffusion folder: every part of the pipeline, with one-line errors.

A folder written by `StableDiffusionPipeline.save_pretrained` (or downloaded from a model hub)
holds `model_index.json` and one subfolder per part:

  unet/          UNet2DConditionModel (4 input channels, or 9 for the inpainting models)
  vae/           AutoencoderKL
  text_encoder/  transformers CLIPTextModel (SD 1.x: CLIP ViT-L/14; SD 2.x: OpenCLIP ViT-H/14's
                 text tower, already cut to its penultimate layer)
  tokenizer/     CLIP BPE: vocab.json, merges.txt (+ tokenizer_config.json, special tokens)
  scheduler/     scheduler_config.json (schedule, prediction type: epsilon or v_prediction)

`load_sd_folder` loads the networks as ldm_jax modules and parameters; `workdir/sd_writer.py`
writes them as a workdir.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ldm_jax.interop import clip_weights
from ldm_jax.interop.diffusers import load_diffusers_autoencoder, load_diffusers_unet, read_config
from ldm_jax.interop.diffusers_config import UnsupportedConfigError
from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.models.bpe_tokenizer import ClipTokenizer
from ldm_jax.models.clip_text import ClipTextConfig
from ldm_jax.models.unet import UNetModel

MODEL_INDEX = "model_index.json"
PIPELINES = (
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipeline",
)
PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_LAYOUT = "model_index.json, unet/, vae/, text_encoder/, tokenizer/ and scheduler/"


@dataclasses.dataclass(frozen=True)
class StableDiffusionParts:
    """The networks and settings of one Stable Diffusion pipeline.

    Attributes:
      unet, unet_params, unet_config: the denoiser and its diffusers config.json.
      vae, vae_params, vae_config: the KL autoencoder (its config holds `scaling_factor`).
      text_config, text_params: the frozen CLIP text encoder.
      tokenizer: its BPE tokenizer.
      scheduler_config: the scheduler's config (schedule, prediction type, timestep spacing).
      pipeline: the pipeline's class name.
    """

    unet: UNetModel
    unet_params: Any
    unet_config: dict[str, Any]
    vae: AutoencoderKL
    vae_params: Any
    vae_config: dict[str, Any]
    text_config: ClipTextConfig
    text_params: Any
    tokenizer: ClipTokenizer
    scheduler_config: dict[str, Any]
    pipeline: str


def read_model_index(directory: str) -> dict[str, Any]:
    """The folder's `model_index.json`, checked to describe a Stable Diffusion pipeline.

    Raises:
      FileNotFoundError: no such folder, or no model_index.json in it.
      UnsupportedConfigError: another pipeline (SDXL, an LDM, ...), or a missing part.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"--dir {directory}: no such folder.")
    path = os.path.join(directory, MODEL_INDEX)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{directory} is not a diffusers Stable Diffusion folder: it has no {MODEL_INDEX} "
            f"(expected {_LAYOUT}, as StableDiffusionPipeline.save_pretrained writes)."
        )
    with open(path) as f:
        index = json.load(f)
    name = index.get("_class_name", "?")
    if "text_encoder_2" in index or "XL" in name:
        raise UnsupportedConfigError(
            f"{directory} is a {name} (two text encoders: SDXL), which ldm_jax does not "
            "implement; Stable Diffusion 1.x and 2.x folders convert."
        )
    if name not in PIPELINES:
        raise UnsupportedConfigError(
            f"{directory} holds a {name}, not a Stable Diffusion pipeline ({', '.join(PIPELINES)})."
        )
    for part in PARTS:
        if index.get(part) in (None, [None, None]) or not os.path.isdir(
            os.path.join(directory, part)
        ):
            raise UnsupportedConfigError(
                f"{directory} has no {part}/ part; a Stable Diffusion folder holds {_LAYOUT}."
            )
    text_class = index["text_encoder"][-1]
    if text_class != "CLIPTextModel":
        raise UnsupportedConfigError(
            f"{directory}/text_encoder is a {text_class}; ldm_jax reads CLIPTextModel text "
            "encoders (Stable Diffusion 1.x and 2.x)."
        )
    return index


def _scheduler_config(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, "scheduler", "scheduler_config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: the folder's scheduler has no config.")
    with open(path) as f:
        return json.load(f)


def load_sd_folder(directory: str, variant: str | None = None) -> StableDiffusionParts:
    """Loads every part of a diffusers Stable Diffusion 1.x/2.x folder (float32).

    Args:
      directory: the pipeline folder (`model_index.json` and its parts).
      variant: weight variant of the U-Net and VAE files (e.g. "fp16").

    Raises:
      FileNotFoundError: a missing folder, index, tokenizer or weight file (named).
      UnsupportedConfigError: not Stable Diffusion 1.x/2.x, or a part ldm_jax cannot express.
      WeightMismatchError: weights that do not fit their config, by tensor name.
    """
    index = read_model_index(directory)
    unet_dir = os.path.join(directory, "unet")
    unet_config = read_config(unet_dir)
    if unet_config.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        raise UnsupportedConfigError(
            f"{unet_dir} is a {unet_config.get('_class_name')}, not a UNet2DConditionModel."
        )
    unet, unet_params = load_diffusers_unet(unet_dir, variant)
    vae_dir = os.path.join(directory, "vae")
    vae, vae_params = load_diffusers_autoencoder(vae_dir, variant)
    if not isinstance(vae, AutoencoderKL):
        raise UnsupportedConfigError(f"{vae_dir}: Stable Diffusion's VAE is an AutoencoderKL.")
    text_config, text_params = clip_weights.load_clip_text(os.path.join(directory, "text_encoder"))
    if unet.context_dim != text_config.hidden_size:
        raise UnsupportedConfigError(
            f"{directory}: the U-Net cross-attends to {unet.context_dim}-wide tokens but the text "
            f"encoder gives {text_config.hidden_size}; the parts are from different models."
        )
    tokenizer = ClipTokenizer.from_dir(os.path.join(directory, "tokenizer"))
    return StableDiffusionParts(
        unet=unet,
        unet_params=unet_params,
        unet_config=unet_config,
        vae=vae,
        vae_params=vae_params,
        vae_config=read_config(vae_dir),
        text_config=text_config,
        text_params=text_params,
        tokenizer=tokenizer,
        scheduler_config=_scheduler_config(directory),
        pipeline=index["_class_name"],
    )
