"""Tiny random Stable Diffusion pipelines built with diffusers (test-only references).

`save_tiny_sd_folder` writes a whole `StableDiffusionPipeline` (or the inpainting one) with a
random U-Net, VAE and CLIP text encoder and the tiny byte-level tokenizer of
`tests/clip_fixtures.py`, as `save_pretrained` does; `tiny_sd_workdir` converts one into a
workdir (cached per configuration for the session).
"""

from __future__ import annotations

import functools
import os
import pathlib
import tempfile

from tests.clip_fixtures import random_clip_text_model, tiny_clip_config, write_tiny_tokenizer
from tests.interop.reference import UNET_CONFIGS

LATENT = 8  # latent side: 64x64 images through the f = 8 VAE would be too slow; f = 2 here
IMAGE = 16

# The parity tests' conv-projection U-Net, cross-attending to the tiny CLIP's 32-wide tokens.
UNET = dict(UNET_CONFIGS["conv_proj_heads"], cross_attention_dim=32, attention_head_dim=4)
VAE = dict(
    block_out_channels=(16, 32),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=IMAGE,
    scaling_factor=0.5,
)
SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
)


def _noisy(model, seed: int, scale: float = 0.05):
    """Adds N(0, scale) to every parameter so norms and biases are not at their defaults."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model.eval()


def make_tiny_sd_pipeline(
    inpainting: bool = False, prediction_type: str = "epsilon", seed: int = 0, use_linear=False
):
    """A random tiny diffusers Stable Diffusion pipeline (float32, CPU, no safety checker)."""
    import diffusers
    import torch
    import transformers

    torch.manual_seed(seed)
    unet_cfg = dict(UNET, in_channels=9 if inpainting else 4, use_linear_projection=use_linear)
    unet = _noisy(diffusers.UNet2DConditionModel(**unet_cfg), seed + 1)
    vae = _noisy(diffusers.AutoencoderKL(**VAE), seed + 2, 0.02)
    text_encoder = random_clip_text_model(tiny_clip_config(), seed + 3)
    scheduler = diffusers.DDIMScheduler(**SCHEDULER, prediction_type=prediction_type)
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_tokenizer(tmp)
        tokenizer = transformers.CLIPTokenizer.from_pretrained(tmp)
    cls = (
        diffusers.StableDiffusionInpaintPipeline
        if inpainting
        else diffusers.StableDiffusionPipeline
    )
    return cls(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_sd_folder(directory: str | os.PathLike, **kwargs) -> pathlib.Path:
    """Saves `make_tiny_sd_pipeline(**kwargs)` with `save_pretrained`; returns the folder."""
    directory = pathlib.Path(directory)
    make_tiny_sd_pipeline(**kwargs).save_pretrained(directory)  # tokenizer/: tokenizer.json only
    return directory


@functools.lru_cache(maxsize=8)
def tiny_sd_workdir(inpainting: bool = False, prediction_type: str = "epsilon") -> str:
    """A converted workdir of a tiny pipeline (written once per session and configuration).

    Returns the workdir; its diffusers source folder is the sibling `src`. Treat both as
    read-only.
    """
    from ldm_jax.interop.sd_pipeline import load_sd_folder
    from ldm_jax.workdir.sd_writer import write_sd_workdir

    root = tempfile.mkdtemp(prefix="tiny_sd_")
    src = save_tiny_sd_folder(
        os.path.join(root, "src"), inpainting=inpainting, prediction_type=prediction_type
    )
    workdir = os.path.join(root, "workdir")
    write_sd_workdir(load_sd_folder(str(src)), workdir, {"source": "diffusers"})
    return workdir
