"""Every path inside a workdir, in one place.

<workdir>/config.json                 the run's config (trainer) or the imported model's
<workdir>/checkpoints/autoencoder/N   orbax checkpoints of stage 1
<workdir>/checkpoints/ldm/N           orbax checkpoints of stage 2 (+ meta: scale_factor, data)
<workdir>/checkpoints/base/0          a LoRA fine-tune's frozen base denoiser (`trainers/finetune`)
<workdir>/lora/                       its LoRA in the diffusers format (pytorch_lora_weights...)
<workdir>/latents/                    the on-disk latent cache (`python -m ldm_jax.cache_latents`)
<workdir>/samples/step_N.png          sample grids written during training
<workdir>/metrics.jsonl, events.*     scalars (JSON lines) and TensorBoard event files
<workdir>/vocab.txt                   a text model's WordPiece vocabulary
<workdir>/text_encoder/               a Stable Diffusion workdir's frozen CLIP (transformers folder)
<workdir>/tokenizer/                  its CLIP BPE tokenizer (vocab.json, merges.txt, ...)
"""

from __future__ import annotations

import os

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"
TEXT_ENCODER_DIR = "text_encoder"
TOKENIZER_DIR = "tokenizer"
STAGES = ("autoencoder", "ldm", "base")
LORA_DIR = "lora"


def config_path(workdir: str) -> str:
    """`<workdir>/config.json`."""
    return os.path.join(workdir, CONFIG_FILE)


def checkpoint_dir(workdir: str, stage: str) -> str:
    """`<workdir>/checkpoints/<stage>` for stage "autoencoder", "ldm" or "base"."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}.")
    return os.path.join(workdir, "checkpoints", stage)


def latent_cache_dir(workdir: str) -> str:
    """`<workdir>/latents`: the default on-disk latent cache."""
    return os.path.join(workdir, "latents")


def sample_path(workdir: str, step: int, prefix: str = "") -> str:
    """`<workdir>/samples/<prefix>step_<step>.png`."""
    return os.path.join(workdir, "samples", f"{prefix}step_{step}.png")


def vocab_path(workdir: str) -> str:
    """`<workdir>/vocab.txt`."""
    return os.path.join(workdir, VOCAB_FILE)


def lora_dir(workdir: str) -> str:
    """`<workdir>/lora`: a LoRA fine-tune's diffusers-format weights."""
    return os.path.join(workdir, LORA_DIR)
