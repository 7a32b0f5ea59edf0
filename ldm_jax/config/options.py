"""Scale-out and optimisation options of a training stage, with defaults for older configs.

A stage's section (`config.autoencoder_train` or `config.train`) may set:
  compute_dtype: "float32" or "bfloat16" (parameters, optimizer state, norms, softmax and the
    loss stay float32).
  remat: U-Net rematerialisation policy ("none", "full", "dots"; stage 2 only).
  grad_accum_steps: micro-batches per optimizer update (batch_size must be a multiple).
  lr_schedule: "constant", "cosine" or "linear" after `warmup_steps` of linear warm-up.
  min_lr_ratio: final learning rate of the cosine/linear decay, as a fraction of the peak.
  latent_cache: stage 2 reads latents encoded in "memory" at start-up, or from the "disk"
    cache in `<workdir>/latents` (written once; see `python -m ldm_jax.cache_latents`).
  on_nonfinite: "stop" (the default: a NaN or infinite loss or gradient ends the run, naming the
    step and the tensor) or "skip" (such a step leaves the parameters unchanged and is logged;
    `training/finite_guard.py`).
`config.mesh` sets the device mesh (see `training/sharding.py`).

A fine-tuning run (`config.finetune`, `trainers/finetune.py`) with method "lora" adapts the
U-Net with the low-rank update `lora_config` describes, and with `finetune.lora.text_encoder`
also the CLIP text encoder's attention projections (`text_encoder_lora_config`); its LoRA tree
is then {"unet": ..., "text_encoder": ...} (`unet_lora`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import ml_collections

from ldm_jax.models.lora import CLIP_ATTENTION_TARGETS, LoraConfig
from ldm_jax.parallel import sharding

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
LR_SCHEDULES = ("constant", "cosine", "linear")
LATENT_CACHES = ("memory", "disk")


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """Resolved options of one stage (see the module docstring)."""

    compute_dtype: str = "float32"
    remat: str = "none"
    grad_accum_steps: int = 1
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.0
    latent_cache: str = "memory"
    on_nonfinite: str = "stop"

    @property
    def skip_nonfinite(self) -> bool:
        return self.on_nonfinite == "skip"

    @property
    def dtype(self):
        return COMPUTE_DTYPES[self.compute_dtype]


def train_options(section: ml_collections.ConfigDict) -> TrainOptions:
    """Reads the options from a stage's config section, defaulting the ones it lacks."""
    fields = {f.name: section.get(f.name, f.default) for f in dataclasses.fields(TrainOptions)}
    return TrainOptions(**fields)


def default_mesh_config() -> ml_collections.ConfigDict:
    """All devices on the data axis; the default logical-axis rules."""
    return ml_collections.ConfigDict(
        dict(
            data=-1,
            fsdp=1,
            tensor=1,
            logical_axis_rules=sharding.DEFAULT_LOGICAL_AXIS_RULES,
        )
    )


def mesh_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config.mesh`, or the default for configs written before meshes existed."""
    mesh = config.get("mesh")
    return default_mesh_config() if mesh is None else mesh


def is_lora_finetune(config: ml_collections.ConfigDict) -> bool:
    """Whether `config` is a LoRA fine-tune (its denoiser = a frozen base + a LoRA tree)."""
    finetune = config.get("finetune")
    return finetune is not None and finetune.get("method") == "lora"


def lora_config(config: ml_collections.ConfigDict) -> LoraConfig:
    """The U-Net LoRA of a LoRA fine-tune: `finetune.lora.{rank, alpha, targets}` (alpha 0 or
    None: alpha = rank)."""
    lora = config.finetune.lora
    alpha = lora.get("alpha") or None
    return LoraConfig(rank=int(lora.rank), alpha=alpha, targets=tuple(lora.targets))


def has_text_encoder_lora(config: ml_collections.ConfigDict) -> bool:
    """Whether a LoRA fine-tune also adapts the text encoder (`finetune.lora.text_encoder`)."""
    return is_lora_finetune(config) and bool(config.finetune.lora.get("text_encoder", False))


def text_encoder_lora_config(config: ml_collections.ConfigDict) -> LoraConfig:
    """The text encoder's LoRA: the U-Net LoRA's rank and alpha on CLIP's attention projections
    (q_proj, k_proj, v_proj, out_proj)."""
    return dataclasses.replace(lora_config(config), targets=CLIP_ATTENTION_TARGETS)


def unet_lora(config: ml_collections.ConfigDict, lora: Any) -> Any:
    """The U-Net part of a LoRA fine-tune's LoRA tree (the whole tree without text-encoder
    LoRA, `lora["unet"]` with it)."""
    return lora["unet"] if has_text_encoder_lora(config) else lora
