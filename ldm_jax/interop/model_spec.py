"""Imported modules -> the paper model-config schema (`config.model`) that `models.factory` builds.

Each function reads the typed section (`models.specs`, `models.cond_specs`) off a module with
`from_module`, checks that `models.factory` rebuilds a module equal to the given one, field by
field, so a workdir never holds a config that would build a different network than the weights
were imported for, and returns the section's `to_dict()` (every schema field).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn

from ldm_jax.interop.diffusers_config import UnsupportedConfigError
from ldm_jax.models import factory
from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.models.cond_specs import CondStageConfig
from ldm_jax.models.specs import RUNTIME_FIELDS, KLConfig, UNetConfig, VQConfig
from ldm_jax.models.unet import UNetModel
from ldm_jax.models.vq_autoencoder import VQModel


def same_module(want: nn.Module, got: nn.Module, what: str) -> None:
    """Raises `UnsupportedConfigError` listing every hyperparameter where the modules differ."""
    if type(want) is not type(got):
        raise UnsupportedConfigError(
            f"The workdir format builds a {type(want).__name__} for this {what}, not a "
            f"{type(got).__name__}."
        )
    diffs = [
        f"{f.name}: workdir config gives {getattr(want, f.name)!r}, the import has "
        f"{getattr(got, f.name)!r}"
        for f in dataclasses.fields(want)
        if f.name not in RUNTIME_FIELDS and getattr(want, f.name) != getattr(got, f.name)
    ]
    if diffs:
        raise UnsupportedConfigError(
            f"The workdir format cannot express this {what}:\n  " + "\n  ".join(diffs)
        )


def first_stage_spec(ae: AutoencoderKL | VQModel) -> dict[str, Any]:
    """`config.model.first_stage` for an imported KL or VQ autoencoder (every schema field)."""
    section = (VQConfig if isinstance(ae, VQModel) else KLConfig).from_module(ae)
    same_module(factory.build_first_stage(section), ae, "first stage")
    return section.to_dict()


def unet_spec(unet: UNetModel, image_size: int, in_channels: int) -> dict[str, Any]:
    """`config.model.unet` for an imported U-Net (latent side `image_size`, input channels)."""
    section = UNetConfig.from_module(unet, image_size=image_size, in_channels=in_channels)
    same_module(factory.build_unet(section), unet, "U-Net")
    return section.to_dict()


def cond_stage_spec(
    cond: nn.Module | None, kind_without_module: str = "none", **extra: Any
) -> dict[str, Any]:
    """`config.model.cond_stage` for an imported tau_theta.

    Args:
      cond: the module, or None (then `kind_without_module`: "none" or "first_stage").
      **extra: fields the module does not hold (a spatial rescaler's `in_channels`, a text
        model's `vocab` file name).
    """
    if cond is None:
        return CondStageConfig.from_dict(dict(kind=kind_without_module, **extra)).to_dict()
    kinds = {m: k for k, m in factory.COND_STAGE_MODULES.items()}
    if type(cond) not in kinds:
        raise UnsupportedConfigError(f"The workdir format has no {type(cond).__name__}.")
    section = CondStageConfig.KINDS[kinds[type(cond)]].from_module(cond, **extra)
    same_module(factory.build_cond_stage(section), cond, "condition encoder")
    return section.to_dict()
