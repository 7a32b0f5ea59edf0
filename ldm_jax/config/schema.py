"""The typed model schema of an experiment config: networks (`config.model`) and diffusion.

One frozen dataclass per section, each with `from_dict(mapping)` (an unknown field is a
`ValueError` naming the closest valid one; wrong types and missing required fields are clear
errors) and `to_dict()`:

  model.first_stage  `FirstStageConfig` -> `KLConfig` | `VQConfig` | `IdentityConfig` by kind
                     (`downsampling_factor`, `latent_channels`, `has_deterministic_latents`
                     answer for any kind);
  model.unet         `UNetConfig` (the reference `UNetModel` arguments and defaults);
  model.cond_stage   `CondStageConfig` -> one class per kind (class, bert, spatial_rescaler,
                     identity, first_stage, none, frozen_clip, frozen_openclip, frozen_minilm);
  model              `ModelConfig` (the three parts + conditioning_key);
  diffusion          `DiffusionConfig` (schedule, target, loss, latent scale).

Where the classes live: the network sections are defined in `models/specs.py` and
`models/cond_specs.py` and re-exported here. `models/` (the factory) and `interop/` (the import
specs) need the same field lists but sit below `config/` in the import order (they may not
import it; tests/test_import_direction.py), so the lists live at their level and `config/`
adds what only the trainers read (the diffusion settings, the whole model section).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from ldm_jax.config.fields import NON_NEGATIVE, POSITIVE, STRICTLY_POSITIVE, Range, option
from ldm_jax.models.cond_specs import (
    BertCondConfig,
    ClassCondConfig,
    CondStageConfig,
    FirstStageCondConfig,
    FrozenClipCondConfig,
    FrozenMiniLMCondConfig,
    FrozenOpenClipCondConfig,
    IdentityCondConfig,
    NoCondConfig,
    SpatialRescalerCondConfig,
)
from ldm_jax.models.latent_denoiser import CONDITIONING_KEYS
from ldm_jax.models.specs import (
    AutoencoderConfig,
    FirstStageConfig,
    IdentityConfig,
    KLConfig,
    Spec,
    UNetConfig,
    VQConfig,
    closest,
    downsampling_factor,
    has_deterministic_latents,
    latent_channels,
)

__all__ = [
    "AutoencoderConfig",
    "BertCondConfig",
    "ClassCondConfig",
    "CondStageConfig",
    "DiffusionConfig",
    "FirstStageCondConfig",
    "FirstStageConfig",
    "FrozenClipCondConfig",
    "FrozenMiniLMCondConfig",
    "FrozenOpenClipCondConfig",
    "IdentityCondConfig",
    "IdentityConfig",
    "KLConfig",
    "ModelConfig",
    "NoCondConfig",
    "PREDICTION_TYPE_OF_PARAMETERIZATION",
    "SpatialRescalerCondConfig",
    "UNetConfig",
    "VQConfig",
    "downsampling_factor",
    "has_deterministic_latents",
    "latent_channels",
]

# beta_start and beta_end: 0 < beta < 1 (and beta_start < beta_end, checked by validation).
_UNIT_INTERVAL = Range(above=0, below=1)

# The reference's `parameterization` -> our (diffusers') `prediction_type`.
PREDICTION_TYPE_OF_PARAMETERIZATION = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiffusionConfig(Spec):
    """The forward process, the training target and loss, and the latent scale (`config.diffusion`).

    Defaults are the reference `LatentDiffusion`'s (its `beta_schedule="linear"` is our
    "scaled_linear": linear in sqrt(beta)).

    Attributes:
      schedule: "linear", "scaled_linear" or "cosine" betas.
      num_timesteps: T.
      beta_start: beta_1 (linear and scaled_linear).
      beta_end: beta_T (linear and scaled_linear).
      prediction_type: the network's target: "epsilon", "sample" (x0) or "v_prediction" (the
        reference's parameterization "eps", "x0", "v").
      loss_type: "l2" or "l1" distance to the target.
      loss_weighting: "simple" (uniform) or "min_snr" (Hang et al. 2023).
      min_snr_gamma: the SNR clip of "min_snr".
      original_elbo_weight: weight of the reference's L_vlb term (0: off).
      scale_factor: latent scale (z * scale_factor is what the diffusion sees).
      scale_by_std: set `scale_factor` to 1/std of the first batch's latents instead.
      rescale_zero_snr: rescale betas to zero terminal SNR (Lin et al. 2024).
      offset_noise: training noise plus this times one N(0, 1) draw per example and channel
        (Guttenberg 2023's "offset noise"; 0: off).
    """

    SECTION: ClassVar[str] = "diffusion"

    schedule: Literal["linear", "scaled_linear", "cosine"] = "scaled_linear"
    num_timesteps: int = option(1000, valid=POSITIVE)
    beta_start: float = option(0.0001, valid=_UNIT_INTERVAL)
    beta_end: float = option(0.02, valid=_UNIT_INTERVAL)
    prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon"
    loss_type: Literal["l2", "l1"] = "l2"
    loss_weighting: Literal["simple", "min_snr"] = "simple"
    min_snr_gamma: float = option(5.0, valid=STRICTLY_POSITIVE)
    original_elbo_weight: float = option(0.0, valid=NON_NEGATIVE)
    scale_factor: float = option(1.0, valid=STRICTLY_POSITIVE)
    scale_by_std: bool = False
    rescale_zero_snr: bool = False
    offset_noise: float = option(0.0, valid=NON_NEGATIVE)

    @classmethod
    def from_reference(cls, mapping: Mapping[str, Any]) -> DiffusionConfig:
        """`from_dict` that also takes the reference's `parameterization` ("eps", "x0", "v")."""
        values = dict(mapping.items())
        if "parameterization" in values:
            p = values.pop("parameterization")
            if p not in PREDICTION_TYPE_OF_PARAMETERIZATION:
                raise ValueError(
                    f"diffusion.parameterization: {p!r} is not one of "
                    f"{tuple(PREDICTION_TYPE_OF_PARAMETERIZATION)}."
                )
            values["prediction_type"] = PREDICTION_TYPE_OF_PARAMETERIZATION[p]
        return cls.from_dict(values)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig(Spec):
    """The networks of a paper/SD model (`config.model`).

    Attributes:
      first_stage: the autoencoder.
      unet: the denoiser (None: a first-stage-only config).
      cond_stage: tau_theta (None: no condition encoder section).
      conditioning_key: how tau_theta(y) enters the U-Net: None, "crossattn", "concat",
        "hybrid" or "adm".
    """

    SECTION: ClassVar[str] = "model"
    PARTS: ClassVar[dict[str, type[Spec]]] = {
        "first_stage": FirstStageConfig,
        "unet": UNetConfig,
        "cond_stage": CondStageConfig,
    }

    first_stage: FirstStageConfig
    unet: UNetConfig | None = None
    cond_stage: CondStageConfig | None = None
    conditioning_key: Literal["crossattn", "concat", "hybrid", "adm"] | None = None

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any] | Spec, where: str | None = None) -> Any:
        """The typed model section; each part is read with its own section's `from_dict`."""
        if isinstance(mapping, cls):
            return mapping
        values = dict(mapping.items())
        names = cls.field_names()
        for key in values:
            if key not in names:
                raise ValueError(
                    f"model: unknown field {key!r}{closest(key, names)}; valid fields: "
                    f"{', '.join(names)}."
                )
        if values.get("first_stage") is None:
            raise ValueError("model: missing required field 'first_stage'.")
        key = values.get("conditioning_key")
        if key not in CONDITIONING_KEYS:
            raise ValueError(f"model.conditioning_key: {key!r} is not one of {CONDITIONING_KEYS}.")
        parts = {
            name: section.from_dict(values[name])
            for name, section in cls.PARTS.items()
            if values.get(name) is not None
        }
        return cls(conditioning_key=key, **parts)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dicts (absent parts left out)."""
        out = {
            name: getattr(self, name).to_dict()
            for name in self.PARTS
            if getattr(self, name) is not None
        }
        out["conditioning_key"] = self.conditioning_key
        return out
