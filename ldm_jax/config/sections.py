"""Typed description of the config sections that runs read as plain dicts.

`config/schema.py` types the model (`config.model`) and `config.diffusion`; this module types the
rest, one frozen dataclass per section, each field with its default and its description (the
`Attributes:` of the docstring, which `config/reference.py` renders into
`docs/configuration.md`):

  (top level)          `TopLevelSection`: stage, seed, name, reference;
  data                 `DataSection`;
  autoencoder_train    `AutoencoderTrainSection` (its `loss`: `FirstStageLossConfig`);
  train                `TrainSection`;
  sample               `SampleSection`;
  mesh                 `MeshSection`;
  finetune             `FinetuneSection` (`FinetuneLoraSection`, `PriorPreservationSection`);
  latent               `LatentSection` (paper configs, for the reader);
  conditioning         `ConditioningSection` (the quickstart schema).

`config/defaults.py` derives its dicts (`TRAIN`, `AUTOENCODER_TRAIN`, `SAMPLE`, ...) from these
classes with `defaults_dict`, so the defaults are stated once. A field whose metadata has
`optional=True` is documented and read with this default when absent, but not written into a
section's defaults dict (older configs and workdirs lack it). Accepted values (`choices` in the
metadata) come from the constants that the code checking them uses; accepted numbers (`valid`, a
`fields.Range`) are checked by `config/validation.py` and rendered in the reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

from ldm_jax.config.fields import (
    DROP_PROBABILITY,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    STRICTLY_POSITIVE,
    Range,
    option,
)
from ldm_jax.config.options import COMPUTE_DTYPES, LATENT_CACHES, LR_SCHEDULES
from ldm_jax.data.degradations import DEGRADATIONS
from ldm_jax.data.preprocess import CROPS
from ldm_jax.diffusion.samplers import SAMPLERS
from ldm_jax.diffusion.timesteps import TIMESTEP_SPACINGS
from ldm_jax.losses.first_stage_loss import FirstStageLossConfig
from ldm_jax.models.lora import UNET_ATTENTION_TARGETS
from ldm_jax.models.unet import REMAT_POLICIES
from ldm_jax.parallel.sharding import DEFAULT_LOGICAL_AXIS_RULES

# Accepted values that no lower module defines; `config/validation.py` checks the same tuples
# (tests/config/test_config_reference.py keeps them equal).
STAGES = ("autoencoder", "ldm", "both", "finetune")
FINETUNE_METHODS = ("lora", "full")
# What a non-finite loss or gradient does (`config/options.TrainOptions.on_nonfinite`).
NONFINITE_POLICIES = ("stop", "skip")
CONDITIONING = ("class", "none")


def _stage_option(default: str, choices: Sequence[str]) -> Any:
    return option(default, choices=tuple(choices))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TopLevelSection:
    """Top-level fields of every experiment config.

    Attributes:
      stage: what `python -m ldm_jax.train` runs: "autoencoder" (stage 1), "ldm" (stage 2, with
        the first stage of `train.first_stage_workdir` or of this workdir), "both" (stage 1
        then stage 2) or "finetune" (`finetune`). Paper and SD configs without it get "ldm"
        (a model with a U-Net) or "autoencoder" from `experiment.finalize`.
      seed: the run's random seed (parameter init, data order, noise).
      name: the experiment's name (provenance only; paper, SD and fine-tune configs).
      reference: the reference YAML the paper config was copied from (provenance only).
      imported: what a workdir written by `python -m ldm_jax.convert` was imported from
        (provenance only; not checked).
    """

    SECTION: ClassVar[str] = "config"

    stage: str = option(choices=STAGES)
    seed: int = option(0, valid=Range(minimum=0, maximum=2**31 - 1))
    name: str = option("", optional=True)
    reference: str = option("", optional=True)
    imported: dict[str, Any] | None = option(None, optional=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataSection:
    """The training images (`ldm_jax/data/datasets.py` lists the dataset names).

    Attributes:
      name: the dataset: "fashion_mnist", "image_folder", "synthetic_shapes", "noto_emoji",
        "noto_emoji_segmentation", "fashion_mnist_layout" or a prepared tfds catalog name
        (e.g. "celeb_a_hq/256"); the README's "Data" section describes each.
      image_size: image side in pixels (a multiple of the first stage's downsampling factor f;
        a fine-tune's 0 means the base model's).
      channels: image channels (1 grey, 3 RGB).
      num_classes: label classes (0: the data's labels are not used).
      train_split: the tfds-style split to train on, slices included (e.g. "train[:256]").
      data_dir: where datasets are prepared and read ("": the default tfds data folder).
      path: the folder of images of "image_folder".
      crop: how images become squares: "center" or "random" (a random crop and flip; not for
        layout models, whose boxes would not follow).
    """

    SECTION: ClassVar[str] = "data"

    name: str
    image_size: int = option(valid=POSITIVE)
    channels: int = option(valid=POSITIVE)
    num_classes: int = option(valid=NON_NEGATIVE)
    train_split: str = "train"
    data_dir: str = ""
    path: str = ""
    crop: str = option("center", choices=CROPS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _TrainingFields:
    """The fields that both training stages (`autoencoder_train`, `train`) have.

    Attributes:
      steps: optimizer updates.
      batch_size: global batch size (a multiple of `grad_accum_steps`).
      learning_rate: peak learning rate of AdamW.
      warmup_steps: steps of linear warm-up from 0 to `learning_rate`.
      weight_decay: AdamW's decoupled weight decay.
      grad_clip: clip gradients to this global norm (0: no clipping).
      log_every: steps between metric logs.
      checkpoint_every: steps between checkpoints (the last step is always saved).
      keep_checkpoints: checkpoints kept in the workdir (older ones are deleted).
      sample_every: steps between sample grids in `samples/` (0: none during training).
      compute_dtype: activation dtype: "float32" or "bfloat16" (parameters, optimizer state,
        norms, softmax and the loss stay float32).
      grad_accum_steps: micro-batches per optimizer update (`batch_size` must be a multiple).
      lr_schedule: the learning rate after the warm-up: "constant", "cosine" or "linear" decay
        to `min_lr_ratio` times the peak.
      min_lr_ratio: final learning rate of the cosine/linear decay, as a fraction of the peak
        (in [0, 1]).
      on_nonfinite: a NaN or infinite loss or gradient: "stop" ends the run naming the step and
        the first non-finite tensor; "skip" leaves the parameters unchanged for that step and
        logs it (`training/finite_guard.py`).
    """


@dataclasses.dataclass(frozen=True, kw_only=True)
class AutoencoderTrainSection(_TrainingFields):
    """Stage 1: training the first stage (`trainers/autoencoder.py`).

    Attributes:
      kl_weight: KL first stages: weight of the KL regulariser.
      l2_weight: weight of the squared error added to the L1 reconstruction loss.
      codebook_weight: VQ first stages: weight of the quantiser's codebook/commitment loss.
      loss: the paper's perceptual and adversarial loss (`autoencoder_train.loss`; absent: the
        plain L1 + L2 + regulariser loss).
    """

    SECTION: ClassVar[str] = "autoencoder_train"

    steps: int = option(800, valid=POSITIVE)
    batch_size: int = option(32, valid=POSITIVE)
    learning_rate: float = option(1e-3, valid=STRICTLY_POSITIVE)
    warmup_steps: int = option(100, valid=NON_NEGATIVE)
    weight_decay: float = option(0.0, valid=NON_NEGATIVE)
    grad_clip: float = option(1.0, valid=NON_NEGATIVE)
    kl_weight: float = option(1e-6, valid=NON_NEGATIVE)
    l2_weight: float = option(1.0, valid=NON_NEGATIVE)
    codebook_weight: float = option(1.0, valid=NON_NEGATIVE)
    log_every: int = option(50, valid=POSITIVE)
    checkpoint_every: int = option(500, valid=POSITIVE)
    keep_checkpoints: int = option(2, valid=POSITIVE)
    sample_every: int = option(0, valid=NON_NEGATIVE)
    compute_dtype: str = _stage_option("float32", COMPUTE_DTYPES)
    grad_accum_steps: int = option(1, valid=POSITIVE)
    lr_schedule: str = _stage_option("constant", LR_SCHEDULES)
    min_lr_ratio: float = option(0.0, valid=PROBABILITY)
    on_nonfinite: str = option("stop", choices=NONFINITE_POLICIES)
    loss: FirstStageLossConfig | None = option(None, optional=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSection(_TrainingFields):
    """Stage 2: training the latent diffusion model (`trainers/ldm.py`; a fine-tune's too).

    Attributes:
      ema_decay: decay of the exponential moving average of the denoiser's parameters that
        sampling uses (in (0, 1)).
      remat: rematerialisation policy of the U-Net blocks (saves memory, costs compute).
      latent_cache: where stage 2 reads the first stage's latents: "memory" (encoded at
        start-up) or "disk" (`<workdir>/latents`, written once; class-conditional and
        unconditional models only).
      first_stage_workdir: the workdir whose first stage to use ("": stage 1 of this workdir;
        else a trained or converted workdir, checked and copied in).
      cond_drop_prob: probability of replacing a cross-attention condition (class, text) by the
        null condition, for classifier-free guidance (in [0, 1); 0: off).
      fixed_text_context: SD tiny variants: fixed per-caption context embeddings instead of the
        frozen text encoder (`trainers/conditions.py`).
      superres_degradation: how super-resolution models make their low-resolution input
        (other than "bicubic" only for super-resolution).
      final_samples: a sample grid after the last step (besides every `sample_every` steps).
    """

    SECTION: ClassVar[str] = "train"

    steps: int = option(2200, valid=POSITIVE)
    batch_size: int = option(128, valid=POSITIVE)
    learning_rate: float = option(1e-3, valid=STRICTLY_POSITIVE)
    warmup_steps: int = option(200, valid=NON_NEGATIVE)
    weight_decay: float = option(0.0, valid=NON_NEGATIVE)
    grad_clip: float = option(1.0, valid=NON_NEGATIVE)
    ema_decay: float = option(0.999, valid=Range(above=0, below=1))
    log_every: int = option(50, valid=POSITIVE)
    checkpoint_every: int = option(500, valid=POSITIVE)
    keep_checkpoints: int = option(2, valid=POSITIVE)
    sample_every: int = option(1100, valid=NON_NEGATIVE)
    compute_dtype: str = _stage_option("float32", COMPUTE_DTYPES)
    remat: str = _stage_option("none", REMAT_POLICIES)
    latent_cache: str = _stage_option("memory", LATENT_CACHES)
    grad_accum_steps: int = option(1, valid=POSITIVE)
    lr_schedule: str = _stage_option("constant", LR_SCHEDULES)
    min_lr_ratio: float = option(0.0, valid=PROBABILITY)
    on_nonfinite: str = option("stop", choices=NONFINITE_POLICIES)
    first_stage_workdir: str = ""
    cond_drop_prob: float = option(0.1, valid=DROP_PROBABILITY)
    fixed_text_context: bool = False
    superres_degradation: str = _stage_option("bicubic", DEGRADATIONS)
    final_samples: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleSection:
    """Sampling during training and the defaults of `python -m ldm_jax.sample`.

    Attributes:
      sampler: the sampler (`diffusion/samplers.py`).
      steps: denoising steps (in [1, diffusion.num_timesteps]).
      eta: DDIM's stochasticity (0: deterministic, 1: as DDPM's variance).
      guidance_scale: classifier-free guidance scale (1: no guidance).
      per_class: samples per class in the training grids (rows without classes).
      timestep_spacing: which timesteps `steps` visits: "leading" (the paper's code),
        "trailing" or "linspace" (diffusers' options; imported SD workdirs set it).
      steps_offset: added to the "leading" timesteps (diffusers' `steps_offset`).
    """

    SECTION: ClassVar[str] = "sample"

    sampler: str = option("ddim", choices=SAMPLERS)
    steps: int = option(50, valid=POSITIVE)
    eta: float = option(1.0, valid=NON_NEGATIVE)
    guidance_scale: float = option(2.0, valid=NON_NEGATIVE)
    per_class: int = option(8, valid=POSITIVE)
    timestep_spacing: str = option("leading", choices=TIMESTEP_SPACINGS, optional=True)
    steps_offset: int = option(1, optional=True, valid=NON_NEGATIVE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshSection:
    """The device mesh and the sharding of parameters (`parallel/sharding.py`).

    Attributes:
      data: devices on the data-parallel axis (-1: the remaining devices).
      fsdp: devices on the fully-sharded data-parallel axis (parameters sharded, batch split).
      tensor: devices on the tensor-parallel axis (heads, MLP and conv output widths).
      logical_axis_rules: (logical axis name, mesh axes or None) pairs that map the models'
        logical parameter axes onto the mesh.
    """

    SECTION: ClassVar[str] = "mesh"

    data: int = option(-1, valid=Range(minimum=1, also=(-1,)))
    fsdp: int = option(1, valid=Range(minimum=1, also=(-1,)))
    tensor: int = option(1, valid=Range(minimum=1, also=(-1,)))
    logical_axis_rules: tuple[tuple[str, Any], ...] = DEFAULT_LOGICAL_AXIS_RULES


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneLoraSection:
    """The low-rank adapters of a LoRA fine-tune (`models/lora.py`).

    Attributes:
      rank: rank of each low-rank update (>= 1).
      alpha: LoRA's scale numerator: the update is scaled by alpha / rank (0: alpha = rank).
      targets: names of the U-Net's Dense modules to adapt.
      text_encoder: also adapt the CLIP text encoder's attention projections (same rank and
        alpha; needs an imported SD base with text encoder weights).
    """

    SECTION: ClassVar[str] = "finetune.lora"

    rank: int = option(4, valid=POSITIVE)
    alpha: float = option(4.0, valid=NON_NEGATIVE)
    targets: tuple[str, ...] = UNET_ATTENTION_TARGETS
    text_encoder: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class PriorPreservationSection:
    """DreamBooth's prior preservation (`trainers/finetune.py`).

    Attributes:
      enabled: add the prior loss on the base model's own samples of `class_prompt`.
      class_prompt: the class's prompt (e.g. "a face emoji"); required when enabled.
      num_class_images: class images the base model samples before training.
      weight: weight of the prior loss.
    """

    SECTION: ClassVar[str] = "finetune.prior_preservation"

    enabled: bool = False
    class_prompt: str = ""
    num_class_images: int = option(64, valid=POSITIVE)
    weight: float = option(1.0, valid=NON_NEGATIVE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneSection:
    """Fine-tuning an existing text-to-image workdir (`stage="finetune"`,
    `configs/finetune/`); the base gives the model, diffusion and sampler settings.

    Attributes:
      base_workdir: the workdir to fine-tune (required; e.g. an imported Stable Diffusion).
      method: "lora" (low-rank adapters on a frozen base) or "full" (every denoiser parameter).
      lora: the adapters of method "lora".
      prior_preservation: DreamBooth's prior loss.
    """

    SECTION: ClassVar[str] = "finetune"

    base_workdir: str = ""
    method: str = option("lora", choices=FINETUNE_METHODS)
    lora: FinetuneLoraSection = option(factory=FinetuneLoraSection)
    prior_preservation: PriorPreservationSection = option(factory=PriorPreservationSection)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LatentSection:
    """The latent shape a paper model works on, stated by paper configs for the reader (the
    trainers compute it from the first stage; `:tiny` variants keep it in step).

    Attributes:
      image_size: latent side (data.image_size / f).
      channels: latent channels.
    """

    SECTION: ClassVar[str] = "latent"

    image_size: int = option(valid=POSITIVE)
    channels: int = option(valid=POSITIVE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConditioningSection:
    """The condition of the quickstart schema (`configs/quickstart.py`); paper configs use
    `model.cond_stage` and `train.cond_drop_prob` instead.

    Attributes:
      kind: "class" (a class token the U-Net cross-attends to, with a null class for guidance)
        or "none" (unconditional).
      drop_prob: probability of the null class in training, for classifier-free guidance (in
        [0, 1)).
    """

    SECTION: ClassVar[str] = "conditioning"

    kind: str = option("class", choices=CONDITIONING)
    drop_prob: float = option(0.1, valid=DROP_PROBABILITY)


def field_default(field: dataclasses.Field) -> Any:
    """A field's default (MISSING for a required field); nested sections as plain dicts."""
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        value = field.default
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def defaults_dict(section: type) -> dict[str, Any]:
    """`section`'s defaults in field order: every field with a default that is not optional."""
    out = {}
    for field in dataclasses.fields(section):
        value = field_default(field)
        if value is not dataclasses.MISSING and not field.metadata.get("optional", False):
            out[field.name] = value
    return out
