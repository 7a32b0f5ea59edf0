"""Typed hyperparameters of the networks: the one list of first-stage, U-Net and tau_theta fields.

Each network part of a model config (`config.model.first_stage`, `.unet`, `.cond_stage`) is a
frozen dataclass here, named and defaulted as the reference code's `*_config.params`. Every other
place that needs a field list takes it from these classes with `dataclasses.fields`:
`models.factory` builds modules from them, `interop.model_spec` reads them back off imported
modules, `config.model_config` translates the quickstart's sections through them, and
`config.schema` re-exports them next to the diffusion settings.

They live in `models/` rather than `config/` because `models/` and `interop/` sit at the bottom
of the import order (they may not import `config/`) and both need the field lists; `config/`
imports them from here.

A family with a `kind` (first stage "kl" | "vq" | "identity"; condition encoders) is one class
per kind: `FirstStageConfig.from_dict({"kind": "vq", ...})` returns a `VQConfig`, and a field of
another kind is an unknown field. `from_dict` raises `ValueError` naming an unknown field with the
closest valid name, a missing required field, or a value of the wrong type.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

# Module dataclass fields that are run-time options, not hyperparameters of the network.
RUNTIME_FIELDS = ("parent", "name", "dtype", "param_dtype", "remat_policy")


def closest(name: str, valid: typing.Iterable[str]) -> str:
    """' (did you mean X?)' for the closest valid name, or '' when none is close."""
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def module_hyperparameters(module_cls: type) -> tuple[str, ...]:
    """The hyperparameter fields of a flax module class (its dataclass fields, no run-time ones)."""
    return tuple(f.name for f in dataclasses.fields(module_cls) if f.name not in RUNTIME_FIELDS)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against the type `hint` (lists become tuples, ints become floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, where)
    if origin is Literal:
        if value not in args:
            hint_text = closest(value, args) if isinstance(value, str) else ""
            raise ValueError(f"{where}: {value!r} is not one of {args}{hint_text}.")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list of {args[0].__name__}, got {value!r}.")
        return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    ok = {
        bool: lambda v: isinstance(v, bool) or type(v).__name__ == "bool_",
        int: lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
        float: lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }[hint](value)
    if not ok:
        raise ValueError(f"{where}: expected {hint.__name__}, got {value!r}.")
    return hint(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Spec:
    """Base of the typed config sections: `from_dict`, `to_dict` and `field_names`.

    A subclass that is one kind of a family sets `KIND` (its `kind` value) and registers in its
    family's `KINDS`; `to_dict` then writes `kind` first and `from_dict` on the family base
    dispatches on it.
    """

    KIND: ClassVar[str | None] = None
    KINDS: ClassVar[dict[str, type[Spec]] | None] = None
    SECTION: ClassVar[str] = "config"
    # Fields that describe inputs or files rather than the module (the caller uses them).
    NOT_MODULE_FIELDS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every field of this section (without `kind`), in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any] | Spec, where: str | None = None) -> Any:
        """The typed section from a mapping (e.g. a `ConfigDict` section or a JSON object).

        A value None for a field that takes no None means "the default", as the reference's
        optional arguments.

        Raises:
          ValueError: an unknown field (with the closest valid name), a missing required field,
            a value of the wrong type, or (for a family) an unknown `kind`.
        """
        if isinstance(mapping, cls):
            return mapping
        where = where or cls.SECTION
        values = dict(mapping.items())
        if cls.KINDS is not None and cls.KIND is None:
            kind = values.get("kind")
            if kind not in cls.KINDS:
                hint = closest(kind, cls.KINDS) if isinstance(kind, str) else ""
                raise ValueError(f"{where}.kind: {kind!r} is not one of {tuple(cls.KINDS)}{hint}.")
            return cls.KINDS[kind].from_dict(values, where)
        if cls.KIND is not None and values.pop("kind", cls.KIND) != cls.KIND:
            raise ValueError(f"{where}.kind: {cls.__name__} is kind {cls.KIND!r}.")
        return cls._from_values(values, where)

    @classmethod
    def _from_values(cls, values: dict[str, Any], where: str) -> Any:
        names, hints = cls.field_names(), _type_hints(cls)
        kind = f" for kind {cls.KIND!r}" if cls.KIND else ""
        for key in values:
            if key not in names:
                owners = [k for k, c in (cls.KINDS or {}).items() if key in c.field_names()]
                hint = f" (a field of kind {owners[0]!r})" if owners else closest(key, names)
                raise ValueError(
                    f"{where}: unknown field {key!r}{kind}{hint}; valid fields: {', '.join(names)}."
                )
        kwargs = {}
        for f in dataclasses.fields(cls):
            value, hint = values.get(f.name), hints[f.name]
            if value is None and not (f.name in values and _takes_none(hint)):
                if f.default is dataclasses.MISSING:
                    raise ValueError(f"{where}: missing required field {f.name!r}{kind}.")
                continue
            kwargs[f.name] = _coerce(value, hint, f"{where}.{f.name}")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Every field as a plain dict (`kind` first for a family member); tuples stay tuples."""
        out = {"kind": self.KIND} if self.KIND is not None else {}
        out.update((name, getattr(self, name)) for name in self.field_names())
        return out

    @classmethod
    def module_field_names(cls) -> tuple[str, ...]:
        """The fields that are hyperparameters of the flax module this section builds."""
        return tuple(n for n in cls.field_names() if n not in cls.NOT_MODULE_FIELDS)

    def module_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the flax module this section builds."""
        return {n: getattr(self, n) for n in self.module_field_names()}

    @classmethod
    def from_module(cls, module: Any, **not_module_fields: Any) -> Any:
        """The section of an existing module (the inverse of `module_kwargs`), plus the fields
        the module does not hold (`NOT_MODULE_FIELDS`, e.g. the U-Net's input side)."""
        values = {n: getattr(module, n) for n in cls.module_field_names()}
        return cls.from_dict({**values, **not_module_fields})

    def replace(self, **changes: Any) -> Any:
        """A copy with `changes` applied and checked like `from_dict`."""
        return type(self).from_dict({**self.to_dict(), **changes})


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _takes_none(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(hint)
    )


def register_kind(base: type[Spec]):
    """Class decorator: registers a kind of the family `base` under its `KIND`."""

    def register(cls: type[Spec]) -> type[Spec]:
        base.KINDS[cls.KIND] = cls
        return cls

    return register


# ----------------------------------------------------------------------------------------------
# First stage: kind "kl" | "vq" (the reference `ddconfig` + embed_dim (+ n_embed)) | "identity".


@dataclasses.dataclass(frozen=True, kw_only=True)
class FirstStageConfig(Spec):
    """The first stage (`first_stage_config`); `from_dict` returns the class of its `kind`.

    Kinds: "kl" (`KLConfig`) and "vq" (`VQConfig`), the autoencoders (`AutoencoderConfig`
    fields), and "identity" (`IdentityConfig`: pixel space, f = 1). Every kind answers
    `downsampling_factor`, `latent_channels` and `DETERMINISTIC`, so no caller needs to know
    which fields a kind has.
    """

    KINDS: ClassVar[dict[str, type[Spec]]] = {}
    SECTION: ClassVar[str] = "model.first_stage"
    # Whether E(x) is one latent (VQ's pre-quantisation h, the identity's x) rather than a
    # posterior to sample from (KL); a deterministic latent is cached as "mean" only.
    DETERMINISTIC: ClassVar[bool] = True

    @property
    def downsampling_factor(self) -> int:
        """f: the latent side is the image side / f."""
        raise NotImplementedError

    @property
    def latent_channels(self) -> int:
        """Channels of the latent z the diffusion runs on."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True, kw_only=True)
class AutoencoderConfig(FirstStageConfig):
    """The convolutional autoencoders (`ddconfig` fields + embed_dim); base of "kl" and "vq".

    Attributes:
      ch: base width of Encoder/Decoder.
      ch_mult: width multipliers per level; f = 2 ** (len(ch_mult) - 1).
      num_res_blocks: ResNet blocks per level.
      z_channels: channels of the Encoder's output (before the quant conv).
      embed_dim: latent channels (after the quant conv).
      in_channels: image channels in.
      out_ch: image channels out.
      attn_resolutions: resolutions (pixels) with self-attention besides the mid block.
      resolution: training image side (sets which levels attend).
      dropout: dropout in the ResNet blocks.
      num_groups: GroupNorm groups (32 in the reference).
      attn_type: "vanilla" or "none" (no attention at all, as `vq-f4-noattn`).
      resamp_with_conv: convolutions in the up/down-samplers.
    """

    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    z_channels: int
    embed_dim: int
    in_channels: int = 3
    out_ch: int = 3
    attn_resolutions: tuple[int, ...] = ()
    resolution: int = 256
    dropout: float = 0.0
    num_groups: int = 32
    attn_type: Literal["vanilla", "none"] = "vanilla"
    resamp_with_conv: bool = True

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_channels(self) -> int:
        return self.embed_dim


@register_kind(FirstStageConfig)
@dataclasses.dataclass(frozen=True, kw_only=True)
class KLConfig(AutoencoderConfig):
    """KL-regularised autoencoder (`AutoencoderKL`).

    Attributes:
      double_z: the Encoder outputs 2 * z_channels, the posterior's mean and log-variance (must
        be True, as the reference).
    """

    KIND: ClassVar[str] = "kl"
    NOT_MODULE_FIELDS: ClassVar[tuple[str, ...]] = ("double_z",)
    DETERMINISTIC: ClassVar[bool] = False

    double_z: bool = True

    def __post_init__(self):
        if not self.double_z:
            raise ValueError(
                "model.first_stage: the KL autoencoder needs double_z=True (as the reference)."
            )


@register_kind(FirstStageConfig)
@dataclasses.dataclass(frozen=True, kw_only=True)
class VQConfig(AutoencoderConfig):
    """Vector-quantised autoencoder (`VQModel`).

    Attributes:
      n_embed: codebook size.
      double_z: Encoder output of 2 * z_channels (False in every released VQ model).
      beta: commitment loss weight.
      legacy: the reference's (buggy but released) placement of `beta` in the VQ loss.
    """

    KIND: ClassVar[str] = "vq"

    n_embed: int
    double_z: bool = False
    beta: float = 0.25
    legacy: bool = True


@register_kind(FirstStageConfig)
@dataclasses.dataclass(frozen=True, kw_only=True)
class IdentityConfig(FirstStageConfig):
    """No first stage: diffusion in pixel space (`IdentityFirstStage`, the paper's LDM-1).

    Attributes:
      in_channels: image channels, which are the latent channels (the module's `channels`).
    """

    KIND: ClassVar[str] = "identity"

    in_channels: int = 3

    @property
    def downsampling_factor(self) -> int:
        return 1

    @property
    def latent_channels(self) -> int:
        return self.in_channels

    def module_kwargs(self) -> dict[str, Any]:
        """`IdentityFirstStage` calls the image channels `channels`."""
        return {"channels": self.in_channels}

    @classmethod
    def from_module(cls, module: Any, **not_module_fields: Any) -> IdentityConfig:
        return cls.from_dict({"in_channels": module.channels, **not_module_fields})


def downsampling_factor(first_stage: Mapping[str, Any] | Spec) -> int:
    """f of any first-stage section (a mapping with `kind`, or typed): the latent side is the
    image side / f (2 ** (len(ch_mult) - 1) for the autoencoders, 1 for "identity")."""
    return FirstStageConfig.from_dict(first_stage).downsampling_factor


def latent_channels(first_stage: Mapping[str, Any] | Spec) -> int:
    """Latent channels of any first-stage section (`embed_dim`; image channels for identity)."""
    return FirstStageConfig.from_dict(first_stage).latent_channels


def has_deterministic_latents(first_stage: Mapping[str, Any] | Spec) -> bool:
    """Whether a first-stage section's latent is used as it is (VQ, identity), not sampled
    from a posterior (KL)."""
    return FirstStageConfig.from_dict(first_stage).DETERMINISTIC


# ----------------------------------------------------------------------------------------------
# U-Net: the reference `UNetModel` arguments (unet_config.params) that the factory builds.


@dataclasses.dataclass(frozen=True, kw_only=True)
class UNetConfig(Spec):
    """The denoising U-Net (`unet_config.params`), with the reference `UNetModel` defaults.

    Not taken: `dims` (2 only), `n_embed` (codebook prediction), `disable_self_attentions`,
    `num_attention_blocks`, `disable_middle_self_attn`; `use_checkpoint` and `use_fp16` are
    run-time options here (`train.remat`, `train.compute_dtype`), dropped by `models.factory`.
    One extension: `use_spatial_transformer` without `context_dim` (which the reference refuses)
    gives transformers whose second attention is self-attention, as the unconditional quickstart.

    Attributes:
      image_size: latent side the model is trained on (example inputs; not a module field).
      in_channels: input channels (latent + concatenated conditions; not a module field).
      model_channels: base width.
      out_channels: output channels (the latent's).
      num_res_blocks: ResBlocks per level.
      attention_resolutions: downsampling rates (1, 2, 4, ...) with attention.
      dropout: ResBlock dropout.
      channel_mult: width multipliers per level.
      conv_resample: convolutions in the up/down-samplers.
      num_classes: classes for the `adm` class embedding added to the time embedding.
      num_heads: attention heads (-1: from num_head_channels).
      num_head_channels: channels per head (-1: from num_heads).
      num_heads_upsample: heads in the decoder half (-1: num_heads).
      use_scale_shift_norm: FiLM-like time conditioning in ResBlocks.
      resblock_updown: ResBlocks for up/down-sampling.
      use_new_attention_order: QKV split order of `AttentionBlock`.
      use_spatial_transformer: SpatialTransformer blocks instead of AttentionBlocks.
      transformer_depth: transformer blocks per SpatialTransformer.
      context_dim: width of the cross-attention context tokens.
      legacy: the reference's head-count rule for transformers (SD v1/v2 set False).
      use_linear_in_transformer: linear instead of 1x1 conv projections (SD v2).
      num_groups: GroupNorm groups (32 in the reference).
    """

    SECTION: ClassVar[str] = "model.unet"
    NOT_MODULE_FIELDS: ClassVar[tuple[str, ...]] = ("image_size", "in_channels")
    # Reference arguments that are run-time options here; `models.factory` drops them.
    RUNTIME_REFERENCE_FIELDS: ClassVar[tuple[str, ...]] = ("use_checkpoint", "use_fp16")

    image_size: int
    in_channels: int
    model_channels: int
    out_channels: int
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    dropout: float = 0.0
    channel_mult: tuple[int, ...] = (1, 2, 4, 8)
    conv_resample: bool = True
    num_classes: int | None = None
    num_heads: int = -1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = False
    resblock_updown: bool = False
    use_new_attention_order: bool = False
    use_spatial_transformer: bool = False
    transformer_depth: int = 1
    context_dim: int | None = None
    legacy: bool = True
    use_linear_in_transformer: bool = False
    num_groups: int = 32

    def __post_init__(self):
        if self.context_dim is not None and not self.use_spatial_transformer:
            raise ValueError(
                "model.unet: context_dim needs use_spatial_transformer (as the reference)."
            )
