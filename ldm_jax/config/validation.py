"""Start-up validation of an experiment config: fail fast, naming the field and the fix."""

from __future__ import annotations

import os

import ml_collections

from ldm_jax import diffusion
from ldm_jax.config.builders import condition_kind, first_stage_kind, layout_vocab
from ldm_jax.config.model_config import has_model_section
from ldm_jax.config.options import (
    COMPUTE_DTYPES,
    LATENT_CACHES,
    LR_SCHEDULES,
    mesh_config,
    train_options,
)
from ldm_jax.config.sections import CONDITIONING, FINETUNE_METHODS, STAGES
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


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and what to use instead."""


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config.{field}: {message}")


def _positive_ints(config: ml_collections.ConfigDict, section: str, names: tuple[str, ...]):
    for name in names:
        value = config[section][name]
        _require(
            isinstance(value, int) and value > 0,
            f"{section}.{name}",
            f"must be a positive integer, got {value!r}.",
        )


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks every field the trainers and samplers rely on.

    Raises:
      ConfigError: naming the first invalid field, e.g. `config.data.image_size: 30 is not
        divisible by the autoencoder's downsampling factor f=4 ...`.
    """
    if "stage" not in config:
        raise ConfigError(
            "config.stage is missing: this is a model description without training sections; "
            "paper and SD configs complete themselves with `experiment.finalize(c, arg)` "
            "(ldm_jax/config/experiment.py), as configs/quickstart.py states every section."
        )
    _require(config.stage in STAGES, "stage", f"{config.stage!r} is not one of {STAGES}.")
    data = config.data
    _require(
        isinstance(data.name, str) and bool(data.name),
        "data.name",
        "must name a dataset, e.g. 'fashion_mnist'.",
    )
    _positive_ints(config, "data", ("image_size", "channels"))
    if has_model_section(config):
        _validate_model(config)
    else:
        _validate_quickstart_networks(config)
    for section in _train_sections(config):
        _positive_ints(
            config,
            section,
            ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"),
        )
        lr = config[section].learning_rate
        _require(
            isinstance(lr, float) and lr > 0,
            f"{section}.learning_rate",
            f"must be a positive float, got {lr!r}.",
        )
    if "diffusion" in config:
        _validate_diffusion(config)
    if config.stage == "finetune":
        _validate_finetune(config)
    _validate_rest(config)


def _train_sections(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The training sections a run reads (a fine-tune trains no first stage)."""
    return ("train",) if config.stage == "finetune" else ("autoencoder_train", "train")


def _validate_finetune(config: ml_collections.ConfigDict) -> None:
    """`config.finetune` (`trainers/finetune.py`), after its base workdir filled `model`."""
    ft = config.get("finetune")
    _require(ft is not None, "finetune", "is missing: config.stage='finetune' needs it.")
    _require(
        ft.method in FINETUNE_METHODS,
        "finetune.method",
        f"{ft.method!r} is not one of {FINETUNE_METHODS}.",
    )
    if ft.method == "lora":
        lora = ft.lora
        _require(
            isinstance(lora.rank, int) and not isinstance(lora.rank, bool) and lora.rank >= 1,
            "finetune.lora.rank",
            f"must be an integer >= 1, got {lora.rank!r}.",
        )
        alpha = lora.get("alpha") or 0.0
        _require(
            isinstance(alpha, (int, float)) and alpha >= 0,
            "finetune.lora.alpha",
            f"must be >= 0 (0: alpha = rank), got {alpha!r}.",
        )
        _require(
            bool(lora.targets) and not isinstance(lora.targets, str),
            "finetune.lora.targets",
            "must name the Dense modules to adapt, e.g. ('to_q', 'to_k', 'to_v', 'to_out_0').",
        )
        cond = config.get("model", {}).get("cond_stage") or {}
        _require(
            not lora.get("text_encoder", False)
            or (cond.get("kind") in CLIP_COND_STAGES and bool(cond.get("text_encoder"))),
            "finetune.lora.text_encoder",
            "needs a base whose CLIP text encoder has weights in its workdir (an imported "
            "Stable Diffusion model); set it to False.",
        )
    else:
        _require(
            not ft.get("lora", {}).get("text_encoder", False),
            "finetune.lora.text_encoder",
            "LoRA on the text encoder needs finetune.method='lora' (a full fine-tune trains "
            "the denoiser only); set it to False.",
        )
    prior = ft.prior_preservation
    if prior.enabled:
        _require(
            bool(str(prior.class_prompt).strip()),
            "finetune.prior_preservation.class_prompt",
            "is empty; give the class's prompt, e.g. 'a face emoji'.",
        )
        n = prior.num_class_images
        _require(
            isinstance(n, int) and n >= 1,
            "finetune.prior_preservation.num_class_images",
            f"must be a positive integer, got {n!r}.",
        )
        _require(
            prior.weight >= 0,
            "finetune.prior_preservation.weight",
            f"must be >= 0, got {prior.weight!r}.",
        )
    offset = config.diffusion.get("offset_noise", 0.0)
    _require(offset >= 0, "diffusion.offset_noise", f"must be >= 0, got {offset!r}.")


def _validate_quickstart_networks(config: ml_collections.ConfigDict) -> None:
    """The quickstart schema's autoencoder, unet and conditioning sections."""
    data = config.data
    ae = config.autoencoder
    _require(len(ae.ch_mult) >= 1, "autoencoder.ch_mult", "needs at least one level.")
    f = 2 ** (len(ae.ch_mult) - 1)
    _require(f <= 32, "autoencoder.ch_mult", f"gives f={f}; the paper's f is at most 32.")
    _require(
        data.image_size % f == 0,
        "data.image_size",
        f"{data.image_size} is not divisible by the autoencoder's downsampling factor "
        f"f={f} (2 ** (len(autoencoder.ch_mult) - 1)); use a multiple of {f}.",
    )
    _positive_ints(config, "autoencoder", ("ch", "num_res_blocks", "z_channels", "embed_dim"))
    groups = ae.num_groups
    for mult in ae.ch_mult:
        _require(
            ae.ch * mult % groups == 0,
            "autoencoder.ch",
            f"width ch*mult={ae.ch * mult} is not divisible by num_groups={groups}.",
        )
    unet = config.unet
    _positive_ints(config, "unet", ("model_channels", "num_res_blocks", "transformer_depth"))
    _require(
        (unet.num_heads == -1) != (unet.num_head_channels == -1),
        "unet.num_heads",
        "set exactly one of unet.num_heads and unet.num_head_channels (the other to -1).",
    )
    latent = data.image_size // f
    levels = len(unet.channel_mult)
    _require(
        latent % 2 ** (levels - 1) == 0,
        "unet.channel_mult",
        f"{levels} levels halve the {latent}x{latent} latent {levels - 1} times; "
        "use fewer levels or a larger image_size.",
    )
    for mult in unet.channel_mult:
        _require(
            unet.model_channels * mult % unet.num_groups == 0,
            "unet.model_channels",
            f"width {unet.model_channels * mult} is not divisible by num_groups.",
        )
    cond = config.conditioning
    _require(
        cond.kind in CONDITIONING,
        "conditioning.kind",
        f"{cond.kind!r} is not one of {CONDITIONING}.",
    )
    _require(0.0 <= cond.drop_prob < 1.0, "conditioning.drop_prob", "must be in [0, 1).")


def _validate_model(config: ml_collections.ConfigDict) -> None:
    """The paper schema (`config.model`) as the trainers use it."""
    model, data = config.model, config.data
    fs = model.first_stage
    _require(
        fs.kind in FIRST_STAGE_KINDS,
        "model.first_stage.kind",
        f"{fs.kind!r} is not one of {FIRST_STAGE_KINDS}.",
    )
    try:
        f = downsampling_factor(fs)
    except ValueError as e:  # an unknown or missing field of the kind, named by the schema
        raise ConfigError(f"config.{e}") from None
    _require(
        data.image_size % f == 0,
        "data.image_size",
        f"{data.image_size} is not divisible by the first stage's downsampling factor f={f}.",
    )
    unet = model.get("unet")
    if unet is None:
        _require(
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
    _require(
        unet.image_size == data.image_size // f,
        "model.unet.image_size",
        f"is {unet.image_size} but data.image_size={data.image_size} / f={f} gives latents of "
        f"{data.image_size // f}; set --config.model.unet.image_size={data.image_size // f}.",
    )
    kind = condition_kind(config)
    drop = config.train.get("cond_drop_prob", 0.0)
    _require(0.0 <= drop < 1.0, "train.cond_drop_prob", f"must be in [0, 1), got {drop!r}.")
    _validate_superres_degradation(config, kind)
    _validate_layout(config, kind)
    cache = train_options(config.train).latent_cache
    _require(
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
        _require(
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
    _require(
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
    _require(
        crop == "center",
        "data.crop",
        f"is {crop!r}, but a layout model's boxes do not follow a random crop or flip of the "
        "image; use --config.data.crop=center.",
    )
    try:
        layout_vocab(config)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _validate_superres_degradation(config: ml_collections.ConfigDict, kind: str) -> None:
    """`train.superres_degradation`: one of `DEGRADATIONS`, other than the default only for
    super-resolution models."""
    method = config.train.get("superres_degradation", "bicubic")
    _require(
        method in DEGRADATIONS,
        "train.superres_degradation",
        f"{method!r} is not one of {DEGRADATIONS}{closest(str(method), DEGRADATIONS)}.",
    )
    _require(
        method == "bicubic" or kind == "superres",
        "train.superres_degradation",
        f"{method!r} degrades the low-resolution input of super-resolution models "
        f"(conditioning_key='concat', cond_stage kind 'identity'); this model's condition is "
        f"{kind!r}: leave it 'bicubic'.",
    )


def _validate_diffusion(config: ml_collections.ConfigDict) -> None:
    diff = config.diffusion
    _require(
        diff.schedule in SCHEDULES,
        "diffusion.schedule",
        f"{diff.schedule!r} is not one of {SCHEDULES}.",
    )
    _require(
        0 < diff.beta_start < diff.beta_end < 1,
        "diffusion.beta_start",
        "need 0 < beta_start < beta_end < 1.",
    )
    _require(
        diff.prediction_type in diffusion.PREDICTION_TYPES,
        "diffusion.prediction_type",
        f"{diff.prediction_type!r} is not one of {diffusion.PREDICTION_TYPES}.",
    )
    _require(
        diff.loss_weighting in diffusion.WEIGHTINGS,
        "diffusion.loss_weighting",
        f"{diff.loss_weighting!r} is not one of {diffusion.WEIGHTINGS}.",
    )
    loss_type = diff.get("loss_type", "l2")
    _require(
        loss_type in LOSS_TYPES,
        "diffusion.loss_type",
        f"{loss_type!r} is not one of {LOSS_TYPES}.",
    )


def _validate_rest(config: ml_collections.ConfigDict) -> None:
    diff = config.get("diffusion") or ml_collections.ConfigDict(dict(num_timesteps=1000))
    _require(0.0 < config.train.ema_decay < 1.0, "train.ema_decay", "must be in (0, 1).")
    sample = config.sample
    _require(
        sample.sampler in SAMPLERS,
        "sample.sampler",
        f"{sample.sampler!r} is not one of {SAMPLERS}.",
    )
    _require(
        1 <= sample.steps <= diff.num_timesteps,
        "sample.steps",
        f"must be in [1, diffusion.num_timesteps={diff.num_timesteps}].",
    )
    for section in _train_sections(config):
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
        raise ConfigError(f"config.{e}") from None
    if loss.is_plain:
        return
    _require(
        train_options(config.autoencoder_train).grad_accum_steps == 1,
        "autoencoder_train.grad_accum_steps",
        "gradient accumulation is not supported with the paper's loss (LPIPS, GAN, learned "
        "logvar or EMA codebook in autoencoder_train.loss); use 1 and a smaller batch_size.",
    )
    _require(
        not loss.uses_vq_ema or first_stage_kind(config) == "vq",
        "autoencoder_train.loss.vq_ema_decay",
        "the EMA codebook needs a VQ first stage (model.first_stage.kind='vq'); set "
        "vq_ema_decay=0.",
    )


def _validate_train_options(config: ml_collections.ConfigDict, section: str) -> None:
    opts = train_options(config[section])
    _require(
        opts.compute_dtype in COMPUTE_DTYPES,
        f"{section}.compute_dtype",
        f"{opts.compute_dtype!r} is not one of {tuple(COMPUTE_DTYPES)}.",
    )
    remat_choices = tuple(REMAT_POLICIES) if section == "train" else ("none",)
    _require(
        opts.remat in remat_choices,
        f"{section}.remat",
        f"{opts.remat!r} is not one of {remat_choices} (remat applies to the U-Net).",
    )
    accum = opts.grad_accum_steps
    _require(
        isinstance(accum, int) and accum >= 1,
        f"{section}.grad_accum_steps",
        f"must be a positive integer, got {accum!r}.",
    )
    _require(
        config[section].batch_size % accum == 0,
        f"{section}.batch_size",
        f"{config[section].batch_size} is not divisible by grad_accum_steps={accum}.",
    )
    _require(
        opts.lr_schedule in LR_SCHEDULES,
        f"{section}.lr_schedule",
        f"{opts.lr_schedule!r} is not one of {LR_SCHEDULES}.",
    )
    _require(0.0 <= opts.min_lr_ratio <= 1.0, f"{section}.min_lr_ratio", "must be in [0, 1].")
    _require(
        opts.latent_cache in LATENT_CACHES,
        f"{section}.latent_cache",
        f"{opts.latent_cache!r} is not one of {LATENT_CACHES}.",
    )


def _validate_mesh(config: ml_collections.ConfigDict) -> None:
    mesh = mesh_config(config)
    sizes = [mesh[a] for a in sharding.MESH_AXES]
    _require(
        all(isinstance(v, int) and (v >= 1 or v == -1) for v in sizes) and sizes.count(-1) <= 1,
        "mesh",
        f"data/fsdp/tensor = {sizes}: use positive sizes, with at most one -1 (the remaining "
        "devices).",
    )
    try:
        sharding.logical_axis_rules(mesh)
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None
