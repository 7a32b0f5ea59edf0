"""The base workdir of a fine-tune run: its config completed from the base, its denoiser loaded,
its text encoder folders copied (`trainers/finetune.py` has the whole picture)."""

from __future__ import annotations

import os
import shutil
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from ldm_jax.config import builders
from ldm_jax.config.model_config import has_model_section
from ldm_jax.config.validation import ConfigError
from ldm_jax.workdir import layout, reader

# Sections of the base workdir's config.json that the fine-tune config may override.
OVERRIDABLE = ("diffusion", "sample")


def base_dir(config: ml_collections.ConfigDict) -> str:
    """`config.finetune.base_workdir`, checked to hold a workdir config."""
    if config.get("finetune") is None:
        raise ConfigError("config.finetune: is missing; config.stage='finetune' needs it.")
    base = str(config.finetune.get("base_workdir") or "")
    if not base:
        raise ConfigError(
            "config.finetune.base_workdir: is empty; name the workdir to fine-tune, e.g. one "
            "imported with python -m ldm_jax.convert diffusers --dir SD_FOLDER --out WORKDIR."
        )
    if not os.path.isfile(layout.config_path(base)):
        raise ConfigError(
            f"config.finetune.base_workdir: {base} holds no config.json; import a model with "
            "python -m ldm_jax.convert diffusers --dir SD_FOLDER --out WORKDIR."
        )
    return base


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The fine-tune config completed from its base workdir (see the module docstring).

    Raises:
      ConfigError: a missing base, a base that is not a text-to-image model with a frozen text
        encoder, or a data.image_size other than the base's.
    """
    root = base_dir(config)
    base = reader.load_config(root)
    kind = builders.condition_kind(base) if has_model_section(base) else "none"
    if kind != "context":
        raise ConfigError(
            f"config.finetune.base_workdir: {root} holds a model conditioned on {kind!r}; "
            "fine-tuning needs a text-to-image model with a frozen text encoder (a Stable "
            "Diffusion workdir from python -m ldm_jax.convert, or a frozen_minilm model)."
        )
    out = ml_collections.ConfigDict(config.to_dict())
    out.model = base.model.to_dict()
    for name in OVERRIDABLE:
        merged = base[name].to_dict() if name in base else {}
        merged.update(config[name].to_dict() if name in config else {})
        out[name] = merged
    # The denoiser's image side (an imported VAE's `resolution` may name another size).
    side = int(base.model.unet.image_size) * builders.downsampling_factor(base)
    size = int(config.data.get("image_size") or 0)
    if size not in (0, side):
        raise ConfigError(
            f"config.data.image_size: is {size} but the base model in {root} works on "
            f"{side}x{side} images; set --config.data.image_size=0 (the base's) or {side}."
        )
    out.data.image_size = side
    out.data.channels = int(base.data.channels)
    out.train.first_stage_workdir = root  # copied into this workdir by `trainers/run.py`
    out.diffusion.scale_by_std = False  # the base's scale factor (`load_base`)
    return out


class Base(NamedTuple):
    """The base workdir's denoiser (EMA) parameters, as float32 numpy, and latent scale."""

    params: Any
    scale_factor: float


def load_base(config: ml_collections.ConfigDict) -> Base:
    """The base denoiser of `config.finetune.base_workdir`, checked against `config.model`."""
    root = base_dir(config)
    ldm_dir = layout.checkpoint_dir(root, "ldm")
    state, meta, _ = reader.restore_state(ldm_dir)
    params = state.get("ema_params") or state["params"]
    abstract = builders.abstract_denoiser_params(config)
    params = reader.check_params(params, abstract, "denoiser", ldm_dir)
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
    return Base(params, float(meta.get("scale_factor", config.diffusion.scale_factor)))


def copy_text_encoder(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Copies the base's text encoder and tokenizer folders (those `model.cond_stage` names)
    into the workdir when missing (process 0)."""
    root = base_dir(config)
    cond = config.model.cond_stage
    for field in ("text_encoder", "tokenizer"):
        name = cond.get(field)
        if not name or jax.process_index() != 0:
            continue
        target = os.path.join(workdir, name)
        if not os.path.isdir(target):
            shutil.copytree(os.path.join(root, name), target)
    if jax.process_count() > 1:  # The others read the copies (shared file system).
        multihost_utils.sync_global_devices("finetune_text_encoder")
