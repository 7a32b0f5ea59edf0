"""The paper's YAML configs (`model.params.{unet,first_stage,cond_stage}_config`) -> our modules.

Only `target`s whose computation ldm_jax reproduces exactly are accepted; others raise
`UnsupportedConfigError` naming the target or field.
"""

from __future__ import annotations

from typing import Any

from ldm_jax.interop.diffusers_config import UnsupportedConfigError
from ldm_jax.models.autoencoder import AutoencoderKL
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


def _target(cfg: Any) -> str:
    return cfg if isinstance(cfg, str) else str(cfg.get("target", ""))


def _reject(params: dict, key: str, allowed: tuple, what: str) -> None:
    if key in params and params[key] not in allowed:
        raise UnsupportedConfigError(f"{what}: {key}={params[key]!r} is not supported.")


def unet_from_yaml(cfg: dict[str, Any]) -> UNetModel:
    """`unet_config` -> `UNetModel` (the reference constructor's defaults where unset)."""
    target, p = _target(cfg), dict(cfg.get("params", {}))
    if not target.endswith(_UNET_TARGETS):
        raise UnsupportedConfigError(f"unet_config target {target!r} is not supported.")
    _reject(p, "dims", (2,), "unet_config")
    _reject(p, "n_embed", (None,), "unet_config")
    _reject(p, "disable_self_attentions", (None,), "unet_config")
    _reject(p, "num_attention_blocks", (None,), "unet_config")
    depth = p.get("transformer_depth", 1)
    if isinstance(depth, (list, tuple)):
        if len(set(depth)) != 1:
            raise UnsupportedConfigError(f"unet_config transformer_depth={depth} per level.")
        depth = depth[0]
    num_classes = p.get("num_classes")
    if num_classes is not None and not isinstance(num_classes, int):
        raise UnsupportedConfigError(f"unet_config num_classes={num_classes!r} is not supported.")
    context_dim = p.get("context_dim")
    if isinstance(context_dim, (list, tuple)):
        context_dim = context_dim[0]
    return UNetModel(
        model_channels=p["model_channels"],
        out_channels=p["out_channels"],
        num_res_blocks=p["num_res_blocks"],
        attention_resolutions=tuple(p["attention_resolutions"]),
        channel_mult=tuple(p.get("channel_mult", (1, 2, 4, 8))),
        num_heads=p.get("num_heads", -1),
        num_head_channels=p.get("num_head_channels", -1),
        num_heads_upsample=p.get("num_heads_upsample", -1),
        use_spatial_transformer=bool(p.get("use_spatial_transformer", False)),
        transformer_depth=depth,
        context_dim=context_dim,
        num_classes=num_classes,
        dropout=float(p.get("dropout", 0.0)),
        conv_resample=bool(p.get("conv_resample", True)),
        use_scale_shift_norm=bool(p.get("use_scale_shift_norm", False)),
        resblock_updown=bool(p.get("resblock_updown", False)),
        use_new_attention_order=bool(p.get("use_new_attention_order", False)),
        use_linear_in_transformer=bool(p.get("use_linear_in_transformer", False)),
        legacy=bool(p.get("legacy", True)),
    )


def first_stage_from_yaml(cfg: dict[str, Any]) -> AutoencoderKL | VQModel:
    """`first_stage_config` -> `AutoencoderKL` or `VQModel`."""
    target, p = _target(cfg), dict(cfg.get("params", {}))
    dd = dict(p.get("ddconfig", {}))
    common = dict(
        ch=dd["ch"],
        ch_mult=tuple(dd["ch_mult"]),
        num_res_blocks=dd["num_res_blocks"],
        z_channels=dd["z_channels"],
        embed_dim=p["embed_dim"],
        in_channels=dd.get("in_channels", 3),
        out_ch=dd.get("out_ch", 3),
        attn_resolutions=tuple(dd.get("attn_resolutions", ())),
        resolution=dd.get("resolution", 256),
        dropout=float(dd.get("dropout", 0.0)),
        attn_type=dd.get("attn_type", "vanilla"),
        resamp_with_conv=bool(dd.get("resamp_with_conv", True)),
    )
    for key in ("tanh_out", "give_pre_end", "use_linear_attn"):
        _reject(dd, key, (False,), "first_stage_config.ddconfig")
    if target.endswith(_KL_TARGETS):
        _reject(dd, "double_z", (True,), "first_stage_config.ddconfig (KL)")
        return AutoencoderKL(**common)
    if target.endswith(_VQ_TARGETS):
        _reject(p, "remap", (None,), "first_stage_config")
        return VQModel(n_embed=p["n_embed"], double_z=bool(dd.get("double_z", False)), **common)
    raise UnsupportedConfigError(f"first_stage_config target {target!r} is not supported.")


def cond_stage_from_yaml(
    cfg: Any, unet: UNetModel
) -> ClassEmbedder | BERTEmbedder | SpatialRescaler | None:
    """`cond_stage_config` -> `ClassEmbedder`, `BERTEmbedder`, `SpatialRescaler`, or None
    (unconditional, identity, or the first stage)."""
    target = _target(cfg)
    if target in _UNCONDITIONAL or target == "__is_first_stage__" or target.endswith("Identity"):
        return None
    if target.endswith(_CLASS_TARGETS):
        p = dict(cfg.get("params", {}))
        n_classes = p.get("n_classes", 1000)
        return ClassEmbedder(num_classes=n_classes - 1, embed_dim=p.get("embed_dim", 512))
    if target.endswith(_BERT_TARGETS):
        p = dict(cfg.get("params", {}))
        bert = BERTEmbedder(
            n_embed=p["n_embed"],
            n_layer=p["n_layer"],
            vocab_size=p.get("vocab_size", 30522),
            max_seq_len=p.get("max_seq_len", 77),
            embedding_dropout=float(p.get("embedding_dropout", 0.0)),
        )
        if unet.context_dim is not None and unet.context_dim != bert.n_embed:
            raise UnsupportedConfigError(
                f"cond_stage_config n_embed={bert.n_embed} differs from the U-Net's "
                f"context_dim={unet.context_dim}."
            )
        return bert
    if target.endswith(_RESCALER_TARGETS):
        p = dict(cfg.get("params", {}))
        return SpatialRescaler(
            n_stages=p.get("n_stages", 1),
            method=p.get("method", "bilinear"),
            multiplier=float(p.get("multiplier", 0.5)),
            out_channels=p.get("out_channels"),
            bias=bool(p.get("bias", False)),
        )
    raise UnsupportedConfigError(
        f"cond_stage_config target {target!r} is not supported by ldm_jax's importer yet; pass "
        "ignore_cond_stage=True to load the rest and feed precomputed context tokens to eps()."
    )
