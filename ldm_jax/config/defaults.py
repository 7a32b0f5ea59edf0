"""Defaults for optional config fields, so older configs and workdirs keep working.

Also the training defaults that `experiment.finalize` gives a paper or SD model config (the
quickstart's values: `configs/quickstart.py` states the same numbers).
"""

from __future__ import annotations

from typing import Any

import ml_collections

# section -> {field: default}; fields added after a config format was first released.
OPTIONAL_FIELDS = {
    "diffusion": {
        "rescale_zero_snr": False,
        "prediction_type": "epsilon",
        "loss_type": "l2",
        "loss_weighting": "simple",
        "min_snr_gamma": 5.0,
        "original_elbo_weight": 0.0,
        "scale_factor": 1.0,
        "scale_by_std": False,
        "offset_noise": 0.0,
    },
    "data": {"train_split": "train", "data_dir": "", "path": "", "crop": "center"},
}

# The reference YAML's `parameterization` values -> our `prediction_type`.
PARAMETERIZATIONS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}

# Stage 1, as the quickstart's `autoencoder_train`.
AUTOENCODER_TRAIN = dict(
    steps=800,
    batch_size=32,
    learning_rate=1e-3,
    warmup_steps=100,
    weight_decay=0.0,
    grad_clip=1.0,
    kl_weight=1e-6,
    l2_weight=1.0,
    codebook_weight=1.0,  # VQ first stages: weight of the quantiser's codebook/commitment loss
    log_every=50,
    checkpoint_every=500,
    keep_checkpoints=2,
    sample_every=0,
    compute_dtype="float32",
    grad_accum_steps=1,
    lr_schedule="constant",
    min_lr_ratio=0.0,
)

# Stage 2, as the quickstart's `train`, plus where the first stage comes from and the
# condition-dropout rate of classifier-free guidance.
TRAIN = dict(
    steps=2200,
    batch_size=128,
    learning_rate=1e-3,
    warmup_steps=200,
    weight_decay=0.0,
    grad_clip=1.0,
    ema_decay=0.999,
    log_every=50,
    checkpoint_every=500,
    keep_checkpoints=2,
    sample_every=1100,
    compute_dtype="float32",
    remat="none",
    latent_cache="memory",
    grad_accum_steps=1,
    lr_schedule="constant",
    min_lr_ratio=0.0,
    first_stage_workdir="",  # "": stage 1 of this workdir; else a trained or converted workdir
    cond_drop_prob=0.1,  # crossattn conditions (class, text) only; 0 disables
    fixed_text_context=False,  # SD tiny variants: fixed per-caption context (trainers/conditions)
    superres_degradation="bicubic",  # super-resolution inputs: "bicubic" or "bsr_light"
    final_samples=True,  # a sample grid after the last step (besides every sample_every steps)
)

# `train` fields that experiment configs (not the quickstart) have; older workdirs lack some.
EXPERIMENT_TRAIN_FIELDS = (
    "first_stage_workdir",
    "cond_drop_prob",
    "fixed_text_context",
    "final_samples",
    "superres_degradation",
)

SAMPLE = dict(sampler="ddim", steps=50, eta=1.0, guidance_scale=2.0, per_class=8)


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
