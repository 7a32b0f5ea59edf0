"""Defaults for optional config fields, so older configs and workdirs keep working."""

from __future__ import annotations

import ml_collections

# section -> {field: default}; fields added after a config format was first released.
OPTIONAL_FIELDS = {
    "diffusion": {
        "rescale_zero_snr": False,
        "prediction_type": "epsilon",
        "loss_weighting": "simple",
        "min_snr_gamma": 5.0,
        "original_elbo_weight": 0.0,
    },
    "data": {"train_split": "train"},
}


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Returns an unlocked copy of `config` with every missing optional field filled in."""
    config = ml_collections.ConfigDict(config.to_dict())
    for section, fields in OPTIONAL_FIELDS.items():
        for name, value in fields.items():
            if section in config and name not in config[section]:
                config[section][name] = value
    return config
