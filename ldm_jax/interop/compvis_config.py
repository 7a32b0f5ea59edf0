"""The paper's YAML configs (`model.params.{unet,first_stage,cond_stage}_config`) -> our modules.

Only `target`s whose computation ldm_jax reproduces exactly are accepted; others raise
`UnsupportedConfigError` naming the target or field, as does a parameter of the wrong type or
range (a YAML file is untrusted input: tests/config/test_config_fuzz.py feeds it random ones).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ldm_jax.interop.diffusers_config import UnsupportedConfigError
from ldm_jax.models.autoencoder import ATTN_TYPES, AutoencoderKL
from ldm_jax.models.conditioning import ClassEmbedder, SpatialRescaler
from ldm_jax.models.text_encoder import BERTEmbedder
from ldm_jax.models.unet import UNetModel
from ldm_jax.models.vq_autoencoder import VQModel

_UNET_TARGETS = ("openaimodel.UNetModel",)
_KL_TARGETS = ("autoencoder.AutoencoderKL",)
_VQ_TARGETS = ("autoencoder.VQModelInterface", "autoencoder.VQModel")
_CLASS_TARGETS = ("modules.ClassEmbedder",)
_BERT_TARGETS = ("modules.BERTEmbedder",)
_RESCALER_TARGETS = ("modules.SpatialRescaler",)
_UNCONDITIONAL = ("__is_unconditional__",)


_MISSING = object()
# `SpatialRescaler` methods (jax.image.resize names and the reference's torch names).
_RESIZE_METHODS = ("nearest", "linear", "bilinear", "trilinear", "bicubic", "cubic", "lanczos3")


def _section(cfg: Any, what: str) -> tuple[str, dict[str, Any]]:
    """(target, params) of a `*_config` entry: a mapping with `target` and `params`, or a bare
    target string (`__is_unconditional__`)."""
    if isinstance(cfg, str):
        return cfg, {}
    if not isinstance(cfg, Mapping):
        raise UnsupportedConfigError(
            f"{what}: expected a mapping with target and params, got {type(cfg).__name__}."
        )
    target = cfg.get("target", "")
    if not isinstance(target, str):
        raise UnsupportedConfigError(f"{what}.target: expected a string, got {target!r}.")
    params = cfg.get("params")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise UnsupportedConfigError(
            f"{what}.params: expected a mapping, got {type(params).__name__}."
        )
    return target, dict(params)


def _check(value: Any, kind: str, where: str) -> Any:
    """`value` as `kind`: "int" (>= 1), "count" (>= 0), "heads" (>= 1 or -1), "float" (finite,
    >= 0), "bool", "str", "ints" (a list of ints >= 1)."""
    if kind == "bool":
        if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
            return bool(value)
        raise UnsupportedConfigError(f"{where}: expected true or false, got {value!r}.")
    if kind == "str":
        if isinstance(value, str):
            return value
        raise UnsupportedConfigError(f"{where}: expected a string, got {value!r}.")
    if kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and math.isfinite(value) and value >= 0:
            return float(value)
        raise UnsupportedConfigError(f"{where}: expected a number >= 0, got {value!r}.")
    if kind == "ints":
        if isinstance(value, (list, tuple)):
            return tuple(_check(v, "int", f"{where}[{i}]") for i, v in enumerate(value))
        raise UnsupportedConfigError(f"{where}: expected a list of integers, got {value!r}.")
    low = {"int": 1, "count": 0, "heads": 1}[kind]
    if type(value) is int and (value >= low or (kind == "heads" and value == -1)):
        return value
    bound = ">= 1 or -1" if kind == "heads" else f">= {low}"
    raise UnsupportedConfigError(f"{where}: expected an integer {bound}, got {value!r}.")


def _param(p: dict[str, Any], key: str, kind: str, what: str, default: Any = _MISSING) -> Any:
    """`p[key]` checked as `kind` (see `_check`); `default` when absent (or null, for a default
    other than None); a missing key without a default is an error naming it."""
    value = p.get(key)
    if value is None:
        if default is _MISSING:
            raise UnsupportedConfigError(f"{what}.params.{key} is missing.")
        return default
    return _check(value, kind, f"{what}.params.{key}")


def _target(cfg: Any) -> str:
    return cfg if isinstance(cfg, str) else str(cfg.get("target", ""))


def _reject(params: dict, key: str, allowed: tuple, what: str) -> None:
    if key in params and not any(
        params[key] is a or (type(params[key]) is type(a) and params[key] == a) for a in allowed
    ):
        raise UnsupportedConfigError(f"{what}: {key}={params[key]!r} is not supported.")


def unet_from_yaml(cfg: dict[str, Any]) -> UNetModel:
    """`unet_config` -> `UNetModel` (the reference constructor's defaults where unset).

    Raises:
      UnsupportedConfigError: another target, an argument ldm_jax does not take, or a value of
        the wrong type or range, naming the key.
    """
    what = "unet_config"
    target, p = _section(cfg, what)
    if not target.endswith(_UNET_TARGETS):
        raise UnsupportedConfigError(f"unet_config target {target!r} is not supported.")
    _reject(p, "dims", (2,), what)
    _reject(p, "n_embed", (None,), what)
    _reject(p, "disable_self_attentions", (None,), what)
    _reject(p, "num_attention_blocks", (None,), what)
    depth = p.get("transformer_depth", 1)
    if isinstance(depth, (list, tuple)):
        depth = _check(depth, "ints", f"{what}.params.transformer_depth")
        if len(set(depth)) != 1:
            raise UnsupportedConfigError(f"unet_config transformer_depth={list(depth)} per level.")
        depth = depth[0]
    num_classes = p.get("num_classes")
    if num_classes is not None and not (type(num_classes) is int and num_classes >= 1):
        raise UnsupportedConfigError(f"unet_config num_classes={num_classes!r} is not supported.")
    context_dim = p.get("context_dim")
    if isinstance(context_dim, (list, tuple)) and context_dim:
        context_dim = context_dim[0]
    if context_dim is not None:
        context_dim = _check(context_dim, "int", f"{what}.params.context_dim")
    channel_mult = _param(p, "channel_mult", "ints", what, (1, 2, 4, 8))
    if not channel_mult:
        raise UnsupportedConfigError(f"{what}.params.channel_mult: needs at least one level.")
    return UNetModel(
        model_channels=_param(p, "model_channels", "int", what),
        out_channels=_param(p, "out_channels", "int", what),
        num_res_blocks=_param(p, "num_res_blocks", "int", what),
        attention_resolutions=_param(p, "attention_resolutions", "ints", what),
        channel_mult=channel_mult,
        num_heads=_param(p, "num_heads", "heads", what, -1),
        num_head_channels=_param(p, "num_head_channels", "heads", what, -1),
        num_heads_upsample=_param(p, "num_heads_upsample", "heads", what, -1),
        use_spatial_transformer=_param(p, "use_spatial_transformer", "bool", what, False),
        transformer_depth=_check(depth, "int", f"{what}.params.transformer_depth"),
        context_dim=context_dim,
        num_classes=num_classes,
        dropout=_param(p, "dropout", "float", what, 0.0),
        conv_resample=_param(p, "conv_resample", "bool", what, True),
        use_scale_shift_norm=_param(p, "use_scale_shift_norm", "bool", what, False),
        resblock_updown=_param(p, "resblock_updown", "bool", what, False),
        use_new_attention_order=_param(p, "use_new_attention_order", "bool", what, False),
        use_linear_in_transformer=_param(p, "use_linear_in_transformer", "bool", what, False),
        legacy=_param(p, "legacy", "bool", what, True),
    )


def first_stage_from_yaml(cfg: dict[str, Any]) -> AutoencoderKL | VQModel:
    """`first_stage_config` -> `AutoencoderKL` or `VQModel`.

    Raises:
      UnsupportedConfigError: another target, an option ldm_jax does not take, or a value of
        the wrong type or range, naming the key.
    """
    what = "first_stage_config"
    target, p = _section(cfg, what)
    dd = p.get("ddconfig")
    if not isinstance(dd, Mapping):
        raise UnsupportedConfigError(
            f"{what}.params.ddconfig: expected a mapping, got {type(dd).__name__}."
        )
    dd = dict(dd)
    dwhat = f"{what}.params.ddconfig"
    for key in ("tanh_out", "give_pre_end", "use_linear_attn"):
        _reject(dd, key, (False,), "first_stage_config.ddconfig")
    ch_mult = _param(dd, "ch_mult", "ints", dwhat)
    if not ch_mult:
        raise UnsupportedConfigError(f"{dwhat}.ch_mult: needs at least one level.")
    attn_type = _param(dd, "attn_type", "str", dwhat, "vanilla")
    if attn_type not in ATTN_TYPES:
        raise UnsupportedConfigError(f"{dwhat}.attn_type={attn_type!r} is not one of {ATTN_TYPES}.")
    common = dict(
        ch=_param(dd, "ch", "int", dwhat),
        ch_mult=ch_mult,
        num_res_blocks=_param(dd, "num_res_blocks", "int", dwhat),
        z_channels=_param(dd, "z_channels", "int", dwhat),
        embed_dim=_param(p, "embed_dim", "int", what),
        in_channels=_param(dd, "in_channels", "int", dwhat, 3),
        out_ch=_param(dd, "out_ch", "int", dwhat, 3),
        attn_resolutions=_param(dd, "attn_resolutions", "ints", dwhat, ()),
        resolution=_param(dd, "resolution", "int", dwhat, 256),
        dropout=_param(dd, "dropout", "float", dwhat, 0.0),
        attn_type=attn_type,
        resamp_with_conv=_param(dd, "resamp_with_conv", "bool", dwhat, True),
    )
    if target.endswith(_KL_TARGETS):
        _reject(dd, "double_z", (True,), "first_stage_config.ddconfig (KL)")
        return AutoencoderKL(**common)
    if target.endswith(_VQ_TARGETS):
        _reject(p, "remap", (None,), "first_stage_config")
        return VQModel(
            n_embed=_param(p, "n_embed", "int", what),
            double_z=_param(dd, "double_z", "bool", dwhat, False),
            **common,
        )
    raise UnsupportedConfigError(f"first_stage_config target {target!r} is not supported.")


def cond_stage_from_yaml(
    cfg: Any, unet: UNetModel
) -> ClassEmbedder | BERTEmbedder | SpatialRescaler | None:
    """`cond_stage_config` -> `ClassEmbedder`, `BERTEmbedder`, `SpatialRescaler`, or None
    (unconditional, identity, or the first stage).

    Raises:
      UnsupportedConfigError: another target, or a value of the wrong type or range, naming
        the key.
    """
    what = "cond_stage_config"
    target, p = _section(cfg, what)
    if target in _UNCONDITIONAL or target == "__is_first_stage__" or target.endswith("Identity"):
        return None
    if target.endswith(_CLASS_TARGETS):
        n_classes = _param(p, "n_classes", "int", what, 1000)
        if n_classes < 2:
            raise UnsupportedConfigError(
                f"{what}.params.n_classes={n_classes}: the embedding needs a class besides the "
                "last (null) row."
            )
        return ClassEmbedder(
            num_classes=n_classes - 1, embed_dim=_param(p, "embed_dim", "int", what, 512)
        )
    if target.endswith(_BERT_TARGETS):
        bert = BERTEmbedder(
            n_embed=_param(p, "n_embed", "int", what),
            n_layer=_param(p, "n_layer", "int", what),
            vocab_size=_param(p, "vocab_size", "int", what, 30522),
            max_seq_len=_param(p, "max_seq_len", "int", what, 77),
            embedding_dropout=_param(p, "embedding_dropout", "float", what, 0.0),
        )
        if unet.context_dim is not None and unet.context_dim != bert.n_embed:
            raise UnsupportedConfigError(
                f"cond_stage_config n_embed={bert.n_embed} differs from the U-Net's "
                f"context_dim={unet.context_dim}."
            )
        return bert
    if target.endswith(_RESCALER_TARGETS):
        method = _param(p, "method", "str", what, "bilinear")
        if method not in _RESIZE_METHODS:
            raise UnsupportedConfigError(
                f"{what}.params.method={method!r} is not one of {_RESIZE_METHODS}."
            )
        multiplier = _param(p, "multiplier", "float", what, 0.5)
        if multiplier <= 0:
            raise UnsupportedConfigError(f"{what}.params.multiplier must be > 0, got {multiplier}.")
        out_channels = p.get("out_channels")
        if out_channels is not None:
            out_channels = _param(p, "out_channels", "int", what)
        return SpatialRescaler(
            n_stages=_param(p, "n_stages", "count", what, 1),
            method=method,
            multiplier=multiplier,
            out_channels=out_channels,
            bias=_param(p, "bias", "bool", what, False),
        )
    raise UnsupportedConfigError(
        f"cond_stage_config target {target!r} is not supported by ldm_jax's importer yet; pass "
        "ignore_cond_stage=True to load the rest and feed precomputed context tokens to eps()."
    )
