"""Start-up validation of an experiment config: fail fast, naming the field and the fix.

`validate_config` runs at the start of `trainers/run.run` (and of `cache_latents` and the
training benchmarks), before a workdir is written or anything compiles, in three passes:

  1. every section against its typed schema (`section_checks`, `field_checks`;
     the networks through `config/schema.py`): unknown keys with the closest valid name,
     missing fields, types, choices and ranges (`config/fields.py`, rendered in
     `docs/configuration.md`);
  2. fields that depend on each other: image size vs the first stage's f and the U-Net's
     levels, widths vs GroupNorm groups and attention heads, the condition's width vs the
     U-Net's context, conditioning vs data (labels, captions, segmentation maps, class tables),
     the diffusion schedule, fine-tuning, the first-stage loss;
  3. the mesh vs the device count and each trained batch vs devices x processes x accumulation
     micro-batches (`data_device_checks.validate_devices`).

Every error is a `ConfigError` whose one-line message starts with `config.<field>:`.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from ldm_jax import diffusion
from ldm_jax.config import schema
from ldm_jax.config.builders import first_stage_kind, layout_vocab
from ldm_jax.config.data_device_checks import (
    condition_kind_checked,
    validate_conditioning_data,
    validate_devices,
)
from ldm_jax.config.errors import ConfigError, one_line, require, train_sections
from ldm_jax.config.field_checks import is_mapping, show
from ldm_jax.config.fields import DROP_PROBABILITY, NON_NEGATIVE, POSITIVE, Range
from ldm_jax.config.model_config import has_model_section, model_config
from ldm_jax.config.options import (
    COMPUTE_DTYPES,
    LATENT_CACHES,
    LR_SCHEDULES,
    mesh_config,
    train_options,
)
from ldm_jax.config.section_checks import check_sections
from ldm_jax.config.sections import FINETUNE_METHODS
from ldm_jax.data.degradations import DEGRADATIONS
from ldm_jax.diffusion.loss_weights import LOSS_TYPES
from ldm_jax.losses.first_stage_loss import FirstStageLossConfig
from ldm_jax.models import factory
from ldm_jax.models.minilm_encoder import CONTEXT_DIM as MINILM_WIDTH
from ldm_jax.models.specs import closest, downsampling_factor
from ldm_jax.models.unet import REMAT_POLICIES
from ldm_jax.parallel import sharding

CLIP_COND_STAGES = ("frozen_clip", "frozen_openclip")  # text encoders read from the workdir
SCHEDULES = ("linear", "scaled_linear", "cosine")
SAMPLERS = tuple(diffusion.SAMPLERS)
FIRST_STAGE_KINDS = tuple(factory.FIRST_STAGE_MODULES)
FROZEN_TEXT_ENCODERS = factory.EXTERNAL_COND_STAGES
# Condition kinds (`builders.condition_kind`) the on-disk latent cache stores.
DISK_CACHE_KINDS = ("none", "class", "adm")
# Tokens of the WordPiece vocabulary that a text model (cond stage "bert") builds from the whole
# training split of a captioned dataset (`trainers/captions.build_vocab`: the 5 special tokens and
# every distinct caption word; tests/config/test_text_encoder_validation.py rebuilds them).
CAPTION_VOCAB_SIZES = {"noto_emoji": 2310}
# `model.cond_stage.vocab` once a run has copied or built its vocabulary into the workdir.
WORKDIR_VOCAB = "vocab.txt"


def validate_config(
    config: ml_collections.ConfigDict,
    num_devices: int | None = None,
    num_processes: int | None = None,
) -> None:
    """Checks every field the trainers and samplers rely on, before anything compiles.

    First each section against its typed schema (`section_checks`: known keys, types, choices,
    ranges), then the fields that depend on each other (image size vs f, widths vs GroupNorm
    groups and attention heads, conditioning vs data), then the mesh and batch sizes against
    the devices and processes of this run.

    Args:
      config: an experiment config (with `with_defaults` applied).
      num_devices: devices of the run (default `jax.device_count()`).
      num_processes: processes of the run (default `jax.process_count()`).

    Raises:
      ConfigError: naming the first invalid field, e.g. `config.data.image_size: 30 is not
        divisible by the autoencoder's downsampling factor f=4 ...`.
    """
    if not is_mapping(config) or "stage" not in config:
        raise ConfigError(
            "config.stage is missing: this is a model description without training sections; "
            "paper and SD configs complete themselves with `experiment.finalize(c, arg)` "
            "(ldm_jax/config/experiment.py), as configs/quickstart.py states every section."
        )
    check_sections(config)
    data = config.data
    require(
        bool(data.name.strip()),
        "data.name",
        "must name a dataset, e.g. 'fashion_mnist'.",
    )
    model = _typed_model(config)
    if has_model_section(config):
        _validate_model(config)
    else:
        _validate_quickstart_networks(config)
    _validate_networks(config, model)
    if "diffusion" in config:
        _validate_diffusion(config)
    if config.stage == "finetune":
        _validate_finetune(config)
    _validate_rest(config)
    validate_conditioning_data(config, model)
    validate_devices(config, num_devices, num_processes)


# Ranges of the model schema's fields (`models/specs.py`, `models/cond_specs.py`): by field
# name, else integers (and tuples of them) >= 1 and other numbers >= 0.
HEADS = Range(minimum=1, also=(-1,))  # -1: derived from the other head setting
MODEL_RANGES = {
    "num_heads": HEADS,
    "num_head_channels": HEADS,
    "num_heads_upsample": HEADS,
    "clip_skip": NON_NEGATIVE,
    "n_stages": NON_NEGATIVE,
    "layer_idx": Range(),
    "dropout": DROP_PROBABILITY,
    "embedding_dropout": DROP_PROBABILITY,
    "multiplier": Range(above=0),
}
NON_EMPTY = ("ch_mult", "channel_mult")


def _check_model_ranges(spec: Any, where: str) -> None:
    """The numbers of a typed model section (`Spec`) against `MODEL_RANGES`."""
    for name in spec.field_names():
        value = getattr(spec, name)
        valid = MODEL_RANGES.get(name)
        items = value if isinstance(value, tuple) else (value,)
        if name in NON_EMPTY:
            require(len(items) >= 1, f"{where}.{name}", "needs at least one level, e.g. (1, 2).")
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            rule = valid or (POSITIVE if isinstance(item, int) else NON_NEGATIVE)
            if not rule.contains(item):
                shown = f"{value!r}" if item is value else f"{value!r} (item {item!r})"
                require(False, f"{where}.{name}", f"must be {rule.describe()}, got {shown}.")


def _typed_model(config: ml_collections.ConfigDict) -> schema.ModelConfig:
    """The networks as the typed model schema, each field's type and range checked; the
    quickstart's sections are named as they are (`config.autoencoder.ch`, `config.unet.*`)."""
    paper = has_model_section(config)
    try:
        if paper:
            for part in schema.ModelConfig.PARTS:
                value = config.model.get(part)
                require(
                    value is None or is_mapping(value),
                    f"model.{part}",
                    f"expected a section (a dict of fields), got {show(value)}.",
                )
                kind = value.get("kind") if value is not None else None
                require(  # `Spec.from_dict` looks an unhashable kind up in a dict
                    kind is None or isinstance(kind, str),
                    f"model.{part}.kind",
                    f"expected a string, got {show(kind)}.",
                )
            model = schema.ModelConfig.from_dict(config.model)
        else:
            _quickstart_types(config)
            values = model_config(config)
            model = schema.ModelConfig(
                first_stage=schema.KLConfig.from_dict(values["first_stage"], "autoencoder"),
                unet=schema.UNetConfig.from_dict(values["unet"], "unet"),
                cond_stage=schema.CondStageConfig.from_dict(values["cond_stage"], "conditioning"),
                conditioning_key=values["conditioning_key"],
            )
    except ValueError as e:
        raise ConfigError(one_line(f"config.{e}")) from None
    names = _network_names(config)
    _check_model_ranges(model.first_stage, names["first_stage"])
    if model.unet is not None:
        _check_model_ranges(model.unet, names["unet"])
    if model.cond_stage is not None:
        _check_model_ranges(model.cond_stage, "model.cond_stage" if paper else "conditioning")
    return model


def _quickstart_types(config: ml_collections.ConfigDict) -> None:
    """The quickstart's `autoencoder` and `unet` sections against their schema types, named as
    they are (before `model_config` computes with them)."""
    data = config.data
    ae = dict(config.autoencoder.items())
    ae.update(in_channels=data.channels, out_ch=data.channels, resolution=data.image_size)
    schema.KLConfig.from_dict(ae, "autoencoder")
    unet = dict(config.unet.items())
    unet.update(image_size=1, in_channels=1, out_channels=1, use_spatial_transformer=True)
    schema.UNetConfig.from_dict(unet, "unet")


def _network_names(config: ml_collections.ConfigDict) -> dict[str, str]:
    """Where the first stage and U-Net fields are in this config's schema."""
    if has_model_section(config):
        return {"first_stage": "model.first_stage", "unet": "model.unet"}
    return {"first_stage": "autoencoder", "unet": "unet"}


def _validate_networks(config: ml_collections.ConfigDict, model: schema.ModelConfig) -> None:
    """Widths against GroupNorm groups and attention heads, U-Net levels against the latent
    side, and the condition's width against the U-Net's context (both schemas)."""
    names = _network_names(config)
    fs = model.first_stage
    if isinstance(fs, schema.AutoencoderConfig):
        where = names["first_stage"]
        for width in dict.fromkeys((fs.ch, *(fs.ch * m for m in fs.ch_mult))):
            require(
                width % fs.num_groups == 0,
                f"{where}.ch",
                f"width ch*mult={width} is not divisible by num_groups={fs.num_groups} "
                f"(GroupNorm); use a ch whose widths ch*ch_mult are multiples of num_groups, "
                f"or a num_groups that divides {width}.",
            )
    unet = model.unet
    if unet is None:
        return
    where = names["unet"]
    require(
        (unet.num_heads == -1) != (unet.num_head_channels == -1),
        f"{where}.num_heads",
        f"set exactly one of {where}.num_heads and {where}.num_head_channels (the other to -1).",
    )
    widths = [unet.model_channels * m for m in unet.channel_mult]
    for width in dict.fromkeys((unet.model_channels, *widths)):
        require(
            width % unet.num_groups == 0,
            f"{where}.model_channels",
            f"width {width} is not divisible by num_groups={unet.num_groups} (GroupNorm); use a "
            f"model_channels whose widths model_channels*channel_mult are multiples of "
            f"num_groups.",
        )
    attention = {widths[-1]}  # the middle block
    attention.update(w for level, w in enumerate(widths) if 2**level in unet.attention_resolutions)
    for width in sorted(attention):
        if unet.num_head_channels != -1:
            require(
                width % unet.num_head_channels == 0,
                f"{where}.num_head_channels",
                f"{unet.num_head_channels} does not divide the attention width {width}; use a "
                f"divisor of every attended width ({sorted(attention)}).",
            )
        else:
            heads = {unet.num_heads}
            if not unet.use_spatial_transformer and unet.num_heads_upsample != -1:
                heads.add(unet.num_heads_upsample)
            for h in sorted(heads):
                require(
                    width % h == 0,
                    f"{where}.num_heads",
                    f"{h} heads do not divide the attention width {width}; use a divisor of "
                    f"every attended width ({sorted(attention)}).",
                )
    levels = len(unet.channel_mult)
    side = unet.image_size
    require(
        side % 2 ** (levels - 1) == 0,
        f"{where}.channel_mult",
        f"{levels} levels halve the {side}x{side} latent {levels - 1} times; use fewer levels "
        "or a larger image_size.",
    )
    latent = fs.latent_channels
    require(
        unet.out_channels == latent,
        f"{where}.out_channels",
        f"is {unet.out_channels}, but the first stage's latents have {latent} channels; set "
        f"it to {latent}.",
    )
    cond = model.cond_stage
    width = {"class": "embed_dim", "bert": "n_embed"}.get(getattr(cond, "KIND", None))
    if width and model.conditioning_key in ("crossattn", "hybrid"):
        require(
            getattr(cond, width) == unet.context_dim,
            f"{where}.context_dim",
            f"is {unet.context_dim}, but the condition encoder (model.cond_stage.{width}) gives "
            f"{getattr(cond, width)}-wide tokens; make them equal.",
        )


def _validate_finetune(config: ml_collections.ConfigDict) -> None:
    """`config.finetune` (`trainers/finetune.py`), after its base workdir filled `model`."""
    ft = config.get("finetune")
    require(ft is not None, "finetune", "is missing: config.stage='finetune' needs it.")
    require(
        ft.method in FINETUNE_METHODS,
        "finetune.method",
        f"{ft.method!r} is not one of {FINETUNE_METHODS}.",
    )
    if ft.method == "lora":
        lora = ft.lora
        require(
            isinstance(lora.rank, int) and not isinstance(lora.rank, bool) and lora.rank >= 1,
            "finetune.lora.rank",
            f"must be an integer >= 1, got {lora.rank!r}.",
        )
        alpha = lora.get("alpha") or 0.0
        require(
            isinstance(alpha, (int, float)) and alpha >= 0,
            "finetune.lora.alpha",
            f"must be >= 0 (0: alpha = rank), got {alpha!r}.",
        )
        require(
            bool(lora.targets) and not isinstance(lora.targets, str),
            "finetune.lora.targets",
            "must name the Dense modules to adapt, e.g. ('to_q', 'to_k', 'to_v', 'to_out_0').",
        )
        cond = config.get("model", {}).get("cond_stage") or {}
        require(
            not lora.get("text_encoder", False)
            or (cond.get("kind") in CLIP_COND_STAGES and bool(cond.get("text_encoder"))),
            "finetune.lora.text_encoder",
            "needs a base whose CLIP text encoder has weights in its workdir (an imported "
            "Stable Diffusion model); set it to False.",
        )
    else:
        require(
            not ft.get("lora", {}).get("text_encoder", False),
            "finetune.lora.text_encoder",
            "LoRA on the text encoder needs finetune.method='lora' (a full fine-tune trains "
            "the denoiser only); set it to False.",
        )
    prior = ft.prior_preservation
    if prior.enabled:
        require(
            bool(str(prior.class_prompt).strip()),
            "finetune.prior_preservation.class_prompt",
            "is empty; give the class's prompt, e.g. 'a face emoji'.",
        )
        n = prior.num_class_images
        require(
            isinstance(n, int) and n >= 1,
            "finetune.prior_preservation.num_class_images",
            f"must be a positive integer, got {n!r}.",
        )
        require(
            prior.weight >= 0,
            "finetune.prior_preservation.weight",
            f"must be >= 0, got {prior.weight!r}.",
        )
    offset = config.diffusion.get("offset_noise", 0.0)
    require(offset >= 0, "diffusion.offset_noise", f"must be >= 0, got {offset!r}.")


def _validate_quickstart_networks(config: ml_collections.ConfigDict) -> None:
    """The quickstart schema's autoencoder against the image size, and its conditioning."""
    data = config.data
    ae = config.autoencoder
    f = 2 ** (len(ae.ch_mult) - 1)
    require(f <= 32, "autoencoder.ch_mult", f"gives f={f}; the paper's f is at most 32.")
    require(
        data.image_size % f == 0,
        "data.image_size",
        f"{data.image_size} is not divisible by the autoencoder's downsampling factor "
        f"f={f} (2 ** (len(autoencoder.ch_mult) - 1)); use a multiple of {f}.",
    )


def _validate_model(config: ml_collections.ConfigDict) -> None:
    """The paper schema (`config.model`) as the trainers use it."""
    model, data = config.model, config.data
    fs = model.first_stage
    require(
        fs.kind in FIRST_STAGE_KINDS,
        "model.first_stage.kind",
        f"{fs.kind!r} is not one of {FIRST_STAGE_KINDS}.",
    )
    try:
        f = downsampling_factor(fs)
    except ValueError as e:  # an unknown or missing field of the kind, named by the schema
        raise ConfigError(one_line(f"config.{e}")) from None
    require(
        data.image_size % f == 0,
        "data.image_size",
        f"{data.image_size} is not divisible by the first stage's downsampling factor f={f}.",
    )
    unet = model.get("unet")
    if unet is None:
        require(
            config.stage == "autoencoder",
            "stage",
            f"{config.stage!r} needs a U-Net (config.model.unet); this config describes a first "
            "stage only: use --config.stage=autoencoder.",
        )
        return
    cond = model.get("cond_stage") or {}
    if (
        cond.get("kind") in FROZEN_TEXT_ENCODERS
        and not config.train.get("fixed_text_context")
        and not cond.get("text_encoder")
    ):
        raise ConfigError(
            f"config.model.cond_stage.kind={cond.get('kind')!r}: training needs the frozen "
            "CLIP/OpenCLIP text encoder's weights, which this config does not name "
            "(cond_stage.text_encoder); fine-tune an imported Stable Diffusion workdir with "
            "configs/finetune/sd_lora.py or sd_full.py, or use the config's ':tiny' "
            "variant (fixed context embeddings)."
        )
    _validate_text_encoder(config)
    require(
        unet.image_size == data.image_size // f,
        "model.unet.image_size",
        f"is {unet.image_size} but data.image_size={data.image_size} / f={f} gives latents of "
        f"{data.image_size // f}; set --config.model.unet.image_size={data.image_size // f}.",
    )
    kind = condition_kind_checked(config)
    _validate_superres_degradation(config, kind)
    _validate_layout(config, kind)
    cache = train_options(config.train).latent_cache
    require(
        cache != "disk" or kind in DISK_CACHE_KINDS,
        "train.latent_cache",
        f"'disk' stores class-conditional and unconditional latents only; this model's "
        f"condition is {kind!r}: use --config.train.latent_cache=memory.",
    )


def _validate_text_encoder(config: ml_collections.ConfigDict) -> None:
    """Text tau_theta: the frozen MiniLM's context width; the jointly trained BERT's vocab_size
    against the vocabulary it will read."""
    model = config.model
    cond = model.get("cond_stage") or {}
    kind = cond.get("kind")
    if kind == "frozen_minilm":
        dim = model.unet.get("context_dim")
        require(
            dim == MINILM_WIDTH,
            "model.unet.context_dim",
            f"is {dim!r}, but the frozen MiniLM (model.cond_stage.kind='frozen_minilm') gives "
            f"{MINILM_WIDTH}-wide contexts; set --config.model.unet.context_dim={MINILM_WIDTH}.",
        )
    elif kind == "bert" and cond.get("use_tokenizer", True):
        _validate_vocab_size(config, cond)


def _vocab_file_size(path: str) -> int:
    """Token ids a `vocab.txt` defines (the line number of its last token, plus one)."""
    with open(path, encoding="utf-8") as f:
        lines = [i for i, line in enumerate(f) if line.rstrip("\n")]
    return lines[-1] + 1 if lines else 0


def _validate_vocab_size(config: ml_collections.ConfigDict, cond: ml_collections.ConfigDict):
    """`cond_stage.vocab_size` covers the given vocabulary file, or the vocabulary that training
    builds from a known dataset's whole training split (`CAPTION_VOCAB_SIZES`). Other cases (a
    split slice, other data) are checked once the vocabulary is built (`captions.load_tokenizer`).
    """
    size = cond.get("vocab_size", 30522)
    given = cond.get("vocab") or ""
    data = config.data
    if given and given != WORKDIR_VOCAB:
        if not os.path.isfile(given):
            return  # the trainer names the missing file
        need = _vocab_file_size(given)
        source = f"the vocabulary {given} ({need} token ids)"
    elif data.name in CAPTION_VOCAB_SIZES and data.get("train_split", "train") == "train":
        need = CAPTION_VOCAB_SIZES[data.name]
        source = (
            f"the WordPiece vocabulary that training builds from {data.name}'s training captions "
            f"({need} tokens, [PAD] [UNK] [CLS] [SEP] [MASK] included)"
        )
    else:
        return
    require(
        isinstance(size, int) and size >= need,
        "model.cond_stage.vocab_size",
        f"is {size!r}, smaller than {source}: token ids past it have no embedding; set "
        f"--config.model.cond_stage.vocab_size={need} (or more).",
    )


def _validate_layout(config: ml_collections.ConfigDict, kind: str) -> None:
    """Layout models: the centre crop (a random crop or flip would move the image but not its
    boxes) and a token layout that fits the BERT (`builders.layout_vocab`)."""
    if kind != "layout":
        return
    crop = config.data.get("crop", "center")
    require(
        crop == "center",
        "data.crop",
        f"is {crop!r}, but a layout model's boxes do not follow a random crop or flip of the "
        "image; use --config.data.crop=center.",
    )
    try:
        layout_vocab(config)
    except ValueError as e:
        raise ConfigError(one_line(str(e))) from None


def _validate_superres_degradation(config: ml_collections.ConfigDict, kind: str) -> None:
    """`train.superres_degradation`: one of `DEGRADATIONS`, other than the default only for
    super-resolution models."""
    method = config.train.get("superres_degradation", "bicubic")
    require(
        method in DEGRADATIONS,
        "train.superres_degradation",
        f"{method!r} is not one of {DEGRADATIONS}{closest(str(method), DEGRADATIONS)}.",
    )
    require(
        method == "bicubic" or kind == "superres",
        "train.superres_degradation",
        f"{method!r} degrades the low-resolution input of super-resolution models "
        f"(conditioning_key='concat', cond_stage kind 'identity'); this model's condition is "
        f"{kind!r}: leave it 'bicubic'.",
    )


def _validate_diffusion(config: ml_collections.ConfigDict) -> None:
    """The diffusion settings as the typed schema reads them (absent fields: their defaults),
    against the values the code implements."""
    try:
        diff = schema.DiffusionConfig.from_reference(dict(config.diffusion.items()))
    except ValueError as e:
        raise ConfigError(one_line(f"config.{e}")) from None
    for name, valid in (
        ("schedule", SCHEDULES),
        ("prediction_type", diffusion.PREDICTION_TYPES),
        ("loss_weighting", diffusion.WEIGHTINGS),
        ("loss_type", LOSS_TYPES),
    ):
        value = getattr(diff, name)
        require(value in valid, f"diffusion.{name}", f"{value!r} is not one of {valid}.")
    require(
        diff.beta_start < diff.beta_end,
        "diffusion.beta_start",
        f"need 0 < beta_start < beta_end < 1, got beta_start={diff.beta_start} and "
        f"beta_end={diff.beta_end}.",
    )


def _validate_rest(config: ml_collections.ConfigDict) -> None:
    diff = config.get("diffusion") or ml_collections.ConfigDict(dict(num_timesteps=1000))
    num_timesteps = diff.get("num_timesteps", 1000)
    require(
        1 <= config.sample.steps <= num_timesteps,
        "sample.steps",
        f"must be in [1, diffusion.num_timesteps={num_timesteps}].",
    )
    for section in train_sections(config):
        _validate_train_options(config, section)
    _validate_first_stage_loss(config)
    _validate_mesh(config)


def _validate_first_stage_loss(config: ml_collections.ConfigDict) -> None:
    """`autoencoder_train.loss` (optional): known fields, types and ranges."""
    if "autoencoder_train" not in config:
        return  # a fine-tune trains no first stage
    loss = config.autoencoder_train.get("loss")
    try:
        loss = FirstStageLossConfig.from_dict(dict(loss or {}))
    except ValueError as e:
        raise ConfigError(one_line(f"config.{e}")) from None
    if loss.is_plain:
        return
    require(
        train_options(config.autoencoder_train).grad_accum_steps == 1,
        "autoencoder_train.grad_accum_steps",
        "gradient accumulation is not supported with the paper's loss (LPIPS, GAN, learned "
        "logvar or EMA codebook in autoencoder_train.loss); use 1 and a smaller batch_size.",
    )
    require(
        not loss.uses_vq_ema or first_stage_kind(config) == "vq",
        "autoencoder_train.loss.vq_ema_decay",
        "the EMA codebook needs a VQ first stage (model.first_stage.kind='vq'); set "
        "vq_ema_decay=0.",
    )


def _validate_train_options(config: ml_collections.ConfigDict, section: str) -> None:
    opts = train_options(config[section])
    require(
        opts.compute_dtype in COMPUTE_DTYPES,
        f"{section}.compute_dtype",
        f"{opts.compute_dtype!r} is not one of {tuple(COMPUTE_DTYPES)}.",
    )
    remat_choices = tuple(REMAT_POLICIES) if section == "train" else ("none",)
    require(
        opts.remat in remat_choices,
        f"{section}.remat",
        f"{opts.remat!r} is not one of {remat_choices} (remat applies to the U-Net).",
    )
    accum = opts.grad_accum_steps
    require(
        isinstance(accum, int) and accum >= 1,
        f"{section}.grad_accum_steps",
        f"must be a positive integer, got {accum!r}.",
    )
    require(
        config[section].batch_size % accum == 0,
        f"{section}.batch_size",
        f"{config[section].batch_size} is not divisible by grad_accum_steps={accum}.",
    )
    require(
        opts.lr_schedule in LR_SCHEDULES,
        f"{section}.lr_schedule",
        f"{opts.lr_schedule!r} is not one of {LR_SCHEDULES}.",
    )
    require(0.0 <= opts.min_lr_ratio <= 1.0, f"{section}.min_lr_ratio", "must be in [0, 1].")
    require(
        opts.latent_cache in LATENT_CACHES,
        f"{section}.latent_cache",
        f"{opts.latent_cache!r} is not one of {LATENT_CACHES}.",
    )


def _validate_mesh(config: ml_collections.ConfigDict) -> None:
    mesh = mesh_config(config)
    sizes = [mesh[a] for a in sharding.MESH_AXES]
    require(
        all(isinstance(v, int) and (v >= 1 or v == -1) for v in sizes) and sizes.count(-1) <= 1,
        "mesh",
        f"data/fsdp/tensor = {sizes}: use positive sizes, with at most one -1 (the remaining "
        "devices).",
    )
    try:
        sharding.logical_axis_rules(mesh)
    except ValueError as e:
        raise ConfigError(one_line(f"config.{e}")) from None
