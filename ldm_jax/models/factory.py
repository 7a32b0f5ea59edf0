"""Turns a paper-style model config into modules, example inputs and parameter counts.

A model config (`configs/paper/*.py`, `configs/sd/*.py`, field `model`) has up to three parts,
each a mapping mirroring the reference YAML's `*_config.params`:

  first_stage: kind "kl" | "vq" and the `ddconfig` (+ embed_dim, n_embed);
  unet:        the reference `UNetModel` arguments (image_size, in_channels, ...);
  cond_stage:  kind "none" | "class" | "bert" | "spatial_rescaler" | "identity" |
               "first_stage" | "frozen_clip" | "frozen_openclip" and its arguments.

Parameters are counted with `jax.eval_shape`: no weights are materialised, so the full-size
models (up to 1.45B parameters) are counted in seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.models.conditioning import ClassEmbedder, IdentityEncoder, SpatialRescaler
from ldm_jax.models.latent_denoiser import LatentDenoiser
from ldm_jax.models.text_encoder import BERTEmbedder
from ldm_jax.models.unet import UNetModel
from ldm_jax.models.vq_autoencoder import VQModel

# Condition encoders with no parameters of their own.
PARAMETER_FREE_COND_STAGES = ("none", "identity", "first_stage")
# Frozen pretrained text encoders that the paper-faithful code does not build (Stable Diffusion).
EXTERNAL_COND_STAGES = ("frozen_clip", "frozen_openclip")


def _get(cfg: Mapping[str, Any], key: str, default: Any = None) -> Any:
    return cfg[key] if key in cfg and cfg[key] is not None else default


def build_first_stage(cfg: Mapping[str, Any]) -> AutoencoderKL | VQModel:
    """A KL or VQ autoencoder from `first_stage` (kind, ddconfig fields, embed_dim, n_embed)."""
    common = dict(
        ch=cfg["ch"],
        ch_mult=tuple(cfg["ch_mult"]),
        num_res_blocks=cfg["num_res_blocks"],
        z_channels=cfg["z_channels"],
        embed_dim=cfg["embed_dim"],
        in_channels=_get(cfg, "in_channels", 3),
        out_ch=_get(cfg, "out_ch", 3),
        attn_resolutions=tuple(_get(cfg, "attn_resolutions", ())),
        resolution=_get(cfg, "resolution", 256),
        dropout=_get(cfg, "dropout", 0.0),
        attn_type=_get(cfg, "attn_type", "vanilla"),
        resamp_with_conv=_get(cfg, "resamp_with_conv", True),
        num_groups=_get(cfg, "num_groups", 32),
    )
    kind = cfg["kind"]
    if kind == "kl":
        if not _get(cfg, "double_z", True):
            raise ValueError("first_stage: the KL autoencoder needs double_z=True (as reference).")
        return AutoencoderKL(**common)
    if kind == "vq":
        return VQModel(
            n_embed=cfg["n_embed"],
            double_z=_get(cfg, "double_z", False),
            beta=_get(cfg, "beta", 0.25),
            **common,
        )
    raise ValueError(f"first_stage.kind must be 'kl' or 'vq', got {kind!r}.")


_UNET_FIELDS = (
    "num_heads",
    "num_head_channels",
    "num_heads_upsample",
    "use_spatial_transformer",
    "transformer_depth",
    "context_dim",
    "num_classes",
    "dropout",
    "conv_resample",
    "use_scale_shift_norm",
    "resblock_updown",
    "use_new_attention_order",
    "use_linear_in_transformer",
    "legacy",
    "num_groups",
)


def build_unet(cfg: Mapping[str, Any]) -> UNetModel:
    """The U-Net from the reference `unet_config.params` (defaults as the reference).

    One extension: `use_spatial_transformer` without `context_dim` (which the reference refuses)
    gives transformers whose second attention is self-attention, as the unconditional quickstart.
    """
    kwargs = {k: cfg[k] for k in _UNET_FIELDS if k in cfg and cfg[k] is not None}
    kwargs.setdefault("use_spatial_transformer", False)  # the reference default
    if "context_dim" in kwargs and not kwargs["use_spatial_transformer"]:
        raise ValueError("unet: context_dim needs use_spatial_transformer (as the reference).")
    return UNetModel(
        model_channels=cfg["model_channels"],
        out_channels=cfg["out_channels"],
        num_res_blocks=cfg["num_res_blocks"],
        attention_resolutions=tuple(cfg["attention_resolutions"]),
        channel_mult=tuple(_get(cfg, "channel_mult", (1, 2, 4, 8))),
        **kwargs,
    )


def build_cond_stage(cfg: Mapping[str, Any] | None) -> nn.Module | None:
    """tau_theta from `cond_stage`; None for parameter-free or external encoders."""
    kind = "none" if cfg is None else cfg["kind"]
    if kind == "class":
        return ClassEmbedder(
            cfg["n_classes"] - int(_get(cfg, "add_null_class", False)),
            cfg["embed_dim"],
            add_null_class=_get(cfg, "add_null_class", False),
        )
    if kind == "bert":
        return BERTEmbedder(
            cfg["n_embed"],
            cfg["n_layer"],
            vocab_size=_get(cfg, "vocab_size", 30522),
            max_seq_len=_get(cfg, "max_seq_len", 77),
            embedding_dropout=_get(cfg, "embedding_dropout", 0.0),
        )
    if kind == "spatial_rescaler":
        return SpatialRescaler(
            n_stages=_get(cfg, "n_stages", 1),
            method=_get(cfg, "method", "bilinear"),
            multiplier=_get(cfg, "multiplier", 0.5),
            out_channels=_get(cfg, "out_channels"),
            bias=_get(cfg, "bias", False),
        )
    if kind == "identity":
        return IdentityEncoder()
    if kind in PARAMETER_FREE_COND_STAGES + EXTERNAL_COND_STAGES:
        return None
    raise ValueError(f"Unknown cond_stage.kind {kind!r}.")


def build_latent_denoiser(model_cfg: Mapping[str, Any]) -> LatentDenoiser:
    """U-Net + tau_theta + `conditioning_key` of a model config as one `LatentDenoiser`."""
    return LatentDenoiser(
        diffusion_model=build_unet(model_cfg["unet"]),
        cond_stage_model=build_cond_stage(_get(model_cfg, "cond_stage")),
        conditioning_key=_get(model_cfg, "conditioning_key"),
    )


def example_inputs(part: str, cfg: Mapping[str, Any]) -> tuple[jax.ShapeDtypeStruct, ...]:
    """Abstract inputs (batch 1) that `init` needs to create every parameter of a part."""
    f32, i32 = jnp.float32, jnp.int32
    if part == "first_stage":
        res = _get(cfg, "resolution", 256)
        return (jax.ShapeDtypeStruct((1, res, res, _get(cfg, "in_channels", 3)), f32),)
    if part == "unet":
        size = cfg["image_size"]
        x = jax.ShapeDtypeStruct((1, size, size, cfg["in_channels"]), f32)
        t = jax.ShapeDtypeStruct((1,), i32)
        dim = _get(cfg, "context_dim")
        ctx = None if dim is None else jax.ShapeDtypeStruct((1, 1, dim), f32)
        y = None if _get(cfg, "num_classes") is None else jax.ShapeDtypeStruct((1,), i32)
        return (x, t, ctx, y)
    if part == "cond_stage":
        kind = cfg["kind"]
        if kind == "class":
            return (jax.ShapeDtypeStruct((1,), i32),)
        if kind == "bert":
            return (jax.ShapeDtypeStruct((1, _get(cfg, "max_seq_len", 77)), i32),)
        if kind in ("spatial_rescaler", "identity"):
            return (jax.ShapeDtypeStruct((1, 16, 16, _get(cfg, "in_channels", 3)), f32),)
    raise ValueError(f"No example inputs for part {part!r}.")


def abstract_params(module: nn.Module, inputs: tuple[Any, ...]) -> Any:
    """The parameter tree of `module` as `jax.ShapeDtypeStruct`s (nothing is allocated)."""
    variables = jax.eval_shape(lambda *a: nn.unbox(module.init(jax.random.PRNGKey(0), *a)), *inputs)
    return variables.get("params", {})


def count_params(tree: Any) -> int:
    """Total number of scalars in a parameter tree (arrays or ShapeDtypeStructs)."""
    return int(sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree)))


def build_part(model_cfg: Mapping[str, Any], part: str) -> tuple[nn.Module | None, Any]:
    """(module, example inputs) for part "unet", "first_stage" or "cond_stage"."""
    cfg = _get(model_cfg, part)
    if cfg is None:
        return None, None
    if part == "unet":
        return build_unet(cfg), example_inputs(part, cfg)
    if part == "first_stage":
        return build_first_stage(cfg), example_inputs(part, cfg)
    module = build_cond_stage(cfg)
    return module, (None if module is None else example_inputs(part, cfg))


def part_params(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Abstract parameter trees per part: {} for parameter-free parts, None for absent or
    external (frozen, not built) ones."""
    out = {}
    for part in ("unet", "first_stage", "cond_stage"):
        module, inputs = build_part(model_cfg, part)
        if module is not None:
            out[part] = abstract_params(module, inputs)
            continue
        cfg = _get(model_cfg, part)
        built_nothing = cfg is None or cfg["kind"] in EXTERNAL_COND_STAGES
        out[part] = None if built_nothing else {}
    return out


def param_counts(model_cfg: Mapping[str, Any]) -> dict[str, int | None]:
    """{"unet": N, "first_stage": N, "cond_stage": N}; None where a part is absent/external."""
    return {k: None if v is None else count_params(v) for k, v in part_params(model_cfg).items()}
