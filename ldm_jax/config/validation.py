"""Start-up validation of an experiment config: fail fast, naming the field and the fix."""

from __future__ import annotations

import ml_collections

from ldm_jax import diffusion
from ldm_jax.config.options import (
    COMPUTE_DTYPES,
    LATENT_CACHES,
    LR_SCHEDULES,
    mesh_config,
    train_options,
)
from ldm_jax.models.unet import REMAT_POLICIES
from ldm_jax.parallel import sharding

STAGES = ("autoencoder", "ldm", "both")
SCHEDULES = ("linear", "scaled_linear", "cosine")
SAMPLERS = tuple(diffusion.SAMPLERS)
CONDITIONING = ("class", "none")


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
            "config.stage is missing: this looks like a model-zoo config (config.model, e.g. "
            "configs/paper/*.py), which describes networks for `python -m ldm_jax.summary` and "
            "`python -m ldm_jax.convert`; the trainer takes experiment configs with stage, data, "
            "model and train sections, such as configs/quickstart.py."
        )
    _require(config.stage in STAGES, "stage", f"{config.stage!r} is not one of {STAGES}.")
    data = config.data
    _require(
        isinstance(data.name, str) and bool(data.name),
        "data.name",
        "must name a dataset, e.g. 'fashion_mnist'.",
    )
    _positive_ints(config, "data", ("image_size", "channels"))
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
    for section in ("autoencoder_train", "train"):
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
    for section in ("autoencoder_train", "train"):
        _validate_train_options(config, section)
    _validate_mesh(config)


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
