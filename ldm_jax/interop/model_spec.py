"""Imported modules -> the paper model-config schema (`config.model`) that `models.factory` builds.

Each function returns a plain dict for one part (`first_stage`, `unet`, `cond_stage`) and checks
that `models.factory` rebuilds a module equal to the given one, field by field, so a workdir never
holds a config that would build a different network than the weights were imported for.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn

from ldm_jax.interop.diffusers_config import UnsupportedConfigError
from ldm_jax.models import factory
from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.models.conditioning import ClassEmbedder, IdentityEncoder, SpatialRescaler
from ldm_jax.models.text_encoder import BERTEmbedder
from ldm_jax.models.unet import UNetModel
from ldm_jax.models.vq_autoencoder import VQModel

_NOT_HYPERPARAMETERS = ("parent", "name", "dtype")


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
        if f.name not in _NOT_HYPERPARAMETERS and getattr(want, f.name) != getattr(got, f.name)
    ]
    if diffs:
        raise UnsupportedConfigError(
            f"The workdir format cannot express this {what}:\n  " + "\n  ".join(diffs)
        )


def first_stage_spec(ae: AutoencoderKL | VQModel) -> dict[str, Any]:
    """`config.model.first_stage` for an imported KL or VQ autoencoder."""
    spec = dict(
        kind="vq" if isinstance(ae, VQModel) else "kl",
        ch=ae.ch,
        ch_mult=list(ae.ch_mult),
        num_res_blocks=ae.num_res_blocks,
        z_channels=ae.z_channels,
        embed_dim=ae.embed_dim,
        in_channels=ae.in_channels,
        out_ch=ae.out_ch,
        attn_resolutions=list(ae.attn_resolutions),
        resolution=ae.resolution,
        dropout=ae.dropout,
        attn_type=ae.attn_type,
        resamp_with_conv=ae.resamp_with_conv,
        num_groups=ae.num_groups,
        double_z=True,
    )
    if isinstance(ae, VQModel):
        spec.update(n_embed=ae.n_embed, double_z=ae.double_z, beta=ae.beta)
        if not ae.legacy:
            raise UnsupportedConfigError("The workdir format has no legacy=False quantiser.")
    same_module(factory.build_first_stage(spec), ae, "first stage")
    return spec


def unet_spec(unet: UNetModel, image_size: int, in_channels: int) -> dict[str, Any]:
    """`config.model.unet` for an imported U-Net (latent side `image_size`, input channels)."""
    spec = dict(
        image_size=image_size,
        in_channels=in_channels,
        out_channels=unet.out_channels,
        model_channels=unet.model_channels,
        attention_resolutions=list(unet.attention_resolutions),
        num_res_blocks=unet.num_res_blocks,
        channel_mult=list(unet.channel_mult),
        num_heads=unet.num_heads,
        num_head_channels=unet.num_head_channels,
        num_heads_upsample=unet.num_heads_upsample,
        use_spatial_transformer=unet.use_spatial_transformer,
        transformer_depth=unet.transformer_depth,
        context_dim=unet.context_dim,
        num_classes=unet.num_classes,
        dropout=unet.dropout,
        conv_resample=unet.conv_resample,
        use_scale_shift_norm=unet.use_scale_shift_norm,
        resblock_updown=unet.resblock_updown,
        use_new_attention_order=unet.use_new_attention_order,
        use_linear_in_transformer=unet.use_linear_in_transformer,
        legacy=unet.legacy,
        num_groups=unet.num_groups,
    )
    same_module(factory.build_unet(spec), unet, "U-Net")
    return spec


def cond_stage_spec(cond: nn.Module | None, kind_without_module: str = "none", **extra: Any):
    """`config.model.cond_stage` for an imported tau_theta.

    Args:
      cond: the module, or None (then `kind_without_module`: "none" or "first_stage").
      **extra: fields the module does not hold (a spatial rescaler's `in_channels`, a text
        model's `vocab` file name).
    """
    if cond is None:
        return dict(kind=kind_without_module, **extra)
    if isinstance(cond, ClassEmbedder):
        spec = dict(
            kind="class",
            n_classes=cond.num_classes + int(cond.add_null_class),
            embed_dim=cond.embed_dim,
            add_null_class=cond.add_null_class,
        )
    elif isinstance(cond, BERTEmbedder):
        spec = dict(
            kind="bert",
            n_embed=cond.n_embed,
            n_layer=cond.n_layer,
            vocab_size=cond.vocab_size,
            max_seq_len=cond.max_seq_len,
            embedding_dropout=cond.embedding_dropout,
        )
    elif isinstance(cond, SpatialRescaler):
        spec = dict(
            kind="spatial_rescaler",
            n_stages=cond.n_stages,
            method=cond.method,
            multiplier=cond.multiplier,
            out_channels=cond.out_channels,
            bias=cond.bias,
        )
    elif isinstance(cond, IdentityEncoder):
        spec = dict(kind="identity")
    else:
        raise UnsupportedConfigError(f"The workdir format has no {type(cond).__name__}.")
    spec.update(extra)
    same_module(factory.build_cond_stage(spec), cond, "condition encoder")
    return spec
