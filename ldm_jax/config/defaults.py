"""Defaults for optional config fields, so older configs and workdirs keep working.

Also the training defaults that `experiment.finalize` gives a paper or SD model config (the
quickstart's values: `configs/quickstart.py` states the same numbers). Every dict here is derived
from the typed sections (`config/sections.py`, `config/schema.py`), where each field's default
and description are stated once (`docs/configuration.md` renders them).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from ldm_jax.config import schema, sections

# `diffusion` fields added after the config format was first released (their defaults are
# `DiffusionConfig`'s).
_OPTIONAL_DIFFUSION_FIELDS = (
    "rescale_zero_snr",
    "prediction_type",
    "loss_type",
    "loss_weighting",
    "min_snr_gamma",
    "original_elbo_weight",
    "scale_factor",
    "scale_by_std",
    "offset_noise",
)
_DIFFUSION_DEFAULTS = {f.name: f.default for f in dataclasses.fields(schema.DiffusionConfig)}

# section -> {field: default}; fields added after a config format was first released.
OPTIONAL_FIELDS = {
    "diffusion": {name: _DIFFUSION_DEFAULTS[name] for name in _OPTIONAL_DIFFUSION_FIELDS},
    "data": sections.defaults_dict(sections.DataSection),  # the fields with a default
}

# The reference YAML's `parameterization` values -> our `prediction_type`.
PARAMETERIZATIONS = schema.PREDICTION_TYPE_OF_PARAMETERIZATION

# Stage 1, as the quickstart's `autoencoder_train` (plus `codebook_weight` for VQ first stages).
AUTOENCODER_TRAIN = sections.defaults_dict(sections.AutoencoderTrainSection)

# Stage 2, as the quickstart's `train`, plus where the first stage comes from, the
# condition-dropout rate of classifier-free guidance and the other `EXPERIMENT_TRAIN_FIELDS`.
TRAIN = sections.defaults_dict(sections.TrainSection)

# `train` fields that experiment configs (not the quickstart) have; older workdirs lack some.
EXPERIMENT_TRAIN_FIELDS = (
    "first_stage_workdir",
    "cond_drop_prob",
    "fixed_text_context",
    "final_samples",
    "superres_degradation",
)

SAMPLE = sections.defaults_dict(sections.SampleSection)


def section(values: dict[str, Any]) -> ml_collections.ConfigDict:
    """A fresh ConfigDict of `values` (one of the dicts above)."""
    return ml_collections.ConfigDict(dict(values))


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Returns an unlocked copy of `config` with every missing optional field filled in.

    A reference-style `diffusion.parameterization` ("eps", "x0", "v") sets `prediction_type`
    when that is absent.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    diffusion = config.get("diffusion")
    if diffusion is not None and "prediction_type" not in diffusion:
        name = diffusion.get("parameterization")
        if name is not None:
            diffusion.prediction_type = PARAMETERIZATIONS.get(name, name)
    for section_name, fields in OPTIONAL_FIELDS.items():
        for name, value in fields.items():
            if section_name in config and name not in config[section_name]:
                config[section_name][name] = value
    if "train" in config and "model" in config and config.model is not None:
        for name in EXPERIMENT_TRAIN_FIELDS:
            if name not in config.train:
                config.train[name] = TRAIN[name]
    return config
