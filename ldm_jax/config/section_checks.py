"""The first pass of `validate_config`: every section of a config against its typed schema
(unknown keys with the closest valid name, missing fields, types, choices, ranges)."""

from __future__ import annotations

import dataclasses

import ml_collections

from ldm_jax.config import schema, sections
from ldm_jax.config.errors import ConfigError, require
from ldm_jax.config.field_checks import check_keys, check_section, is_mapping, show
from ldm_jax.config.model_config import has_model_section
from ldm_jax.parallel import sharding

# Top-level sections and their typed schema (`config/sections.py`); `model`, `diffusion` and the
# quickstart's `autoencoder` and `unet` are checked by the model schema (`config/schema.py`).
SECTIONS = {
    section.SECTION: section
    for section in (
        sections.DataSection,
        sections.AutoencoderTrainSection,
        sections.TrainSection,
        sections.SampleSection,
        sections.MeshSection,
        sections.FinetuneSection,
        sections.LatentSection,
        sections.ConditioningSection,
    )
}
# Fields with a default that the trainers read without one: a section that has them must
# state them (`experiment.finalize` fills them in for paper configs).
_TRAINING_READ = (
    "steps",
    "batch_size",
    "learning_rate",
    "warmup_steps",
    "weight_decay",
    "grad_clip",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "sample_every",
)
ALWAYS_READ = {
    "autoencoder_train": _TRAINING_READ + ("kl_weight", "l2_weight"),
    "train": _TRAINING_READ + ("ema_decay",),
    "sample": ("sampler", "steps", "eta", "guidance_scale", "per_class"),
    "mesh": sharding.MESH_AXES,
    "conditioning": ("kind", "drop_prob"),  # `model_config` reads both
}
MODEL_SECTIONS = ("model", "diffusion", "autoencoder", "unet")
# Fields of the quickstart's `autoencoder` and `unet` that come from other sections
# (`model_config`): data.channels, data.image_size, the autoencoder's embed_dim.
QUICKSTART_DERIVED = {
    "autoencoder": ("in_channels", "out_ch", "resolution", "double_z"),
    "unet": ("image_size", "in_channels", "out_channels", "use_spatial_transformer"),
}
QUICKSTART_SCHEMA = {"autoencoder": schema.KLConfig, "unet": schema.UNetConfig}


def _required_sections(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    needed = ["data", "train", "sample"]
    if config.get("stage") != "finetune":
        needed.append("autoencoder_train")
    if not has_model_section(config):
        needed += ["autoencoder", "unet", "conditioning"]
    if config.get("stage") == "finetune":
        needed.append("finetune")
    return tuple(needed)


def check_sections(config: ml_collections.ConfigDict) -> None:
    """Each section against its typed schema: unknown keys (with the closest valid name),
    missing required fields, types, choices and ranges (`field_checks.check_section`)."""
    top = [f.name for f in dataclasses.fields(sections.TopLevelSection)]
    check_keys(config, top + list(SECTIONS) + list(MODEL_SECTIONS), "")
    check_section(config, sections.TopLevelSection, "", extra=tuple(SECTIONS) + MODEL_SECTIONS)
    for name in _required_sections(config):
        require(
            name in config and config[name] is not None,
            name,
            "is missing; every config states it (see docs/configuration.md).",
        )
    for name, section in SECTIONS.items():
        if config.get(name) is not None:
            check_section(config[name], section)
            for field in ALWAYS_READ.get(name, ()):
                require(
                    field in config[name],
                    f"{name}.{field}",
                    "is missing; the trainers read it (see docs/configuration.md for its default).",
                )
    for name in ("model", "autoencoder", "unet"):
        if name in config and config[name] is not None and not is_mapping(config[name]):
            raise ConfigError(
                f"config.{name}: expected a section (a dict of fields), got {show(config[name])}."
            )
    if config.get("diffusion") is not None:
        diff = config.diffusion
        check_section(diff, schema.DiffusionConfig, extra=("parameterization",))
        p = diff.get("parameterization", "eps")
        require(
            p in schema.PREDICTION_TYPE_OF_PARAMETERIZATION,
            "diffusion.parameterization",
            f"{p!r} is not one of {tuple(schema.PREDICTION_TYPE_OF_PARAMETERIZATION)}; or "
            "leave it out and set diffusion.prediction_type.",
        )
    for name, derived in QUICKSTART_DERIVED.items():
        if has_model_section(config) or name not in config:
            continue
        names = [n for n in QUICKSTART_SCHEMA[name].field_names() if n not in derived]
        for key in config[name].keys():
            if key in derived:
                raise ConfigError(
                    f"config.{name}.{key}: is derived from the data and autoencoder sections in "
                    f"the quickstart schema; remove it (see docs/configuration.md)."
                )
        check_keys(config[name], names, name)
    if not has_model_section(config) and config.conditioning.kind == "class":
        dim = config.unet.get("context_dim")
        require(
            isinstance(dim, int) and not isinstance(dim, bool) and dim >= 1,
            "unet.context_dim",
            f"is {dim!r}: class conditioning cross-attends to class tokens of this width; "
            "give a positive integer, e.g. 128.",
        )
