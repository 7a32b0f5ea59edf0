"""Turns a validated config into models and a noise schedule (the config/model boundary)."""

from __future__ import annotations

import ml_collections

from ldm_jax import diffusion
from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.models.conditioning import ClassEmbedder
from ldm_jax.models.latent_denoiser import LatentDenoiser
from ldm_jax.models.unet import UNetModel


def build_autoencoder(config: ml_collections.ConfigDict) -> AutoencoderKL:
    """The first-stage KL autoencoder for `config.autoencoder` and `config.data`."""
    ae = config.autoencoder
    return AutoencoderKL(
        ch=ae.ch,
        ch_mult=tuple(ae.ch_mult),
        num_res_blocks=ae.num_res_blocks,
        z_channels=ae.z_channels,
        embed_dim=ae.embed_dim,
        in_channels=config.data.channels,
        out_ch=config.data.channels,
        attn_resolutions=tuple(ae.attn_resolutions),
        resolution=config.data.image_size,
        dropout=ae.dropout,
        num_groups=ae.num_groups,
    )


def latent_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    """(h, w, c) of the latent z for one image."""
    f = 2 ** (len(config.autoencoder.ch_mult) - 1)
    side = config.data.image_size // f
    return side, side, config.autoencoder.embed_dim


def build_denoiser(config: ml_collections.ConfigDict) -> LatentDenoiser:
    """U-Net plus condition encoder for `config.unet` / `config.conditioning`."""
    u = config.unet
    class_conditional = config.conditioning.kind == "class"
    unet = UNetModel(
        model_channels=u.model_channels,
        out_channels=config.autoencoder.embed_dim,
        num_res_blocks=u.num_res_blocks,
        attention_resolutions=tuple(u.attention_resolutions),
        channel_mult=tuple(u.channel_mult),
        num_heads=u.num_heads,
        num_head_channels=u.num_head_channels,
        transformer_depth=u.transformer_depth,
        context_dim=u.context_dim if class_conditional else None,
        dropout=u.dropout,
        use_scale_shift_norm=u.use_scale_shift_norm,
        use_linear_in_transformer=u.use_linear_in_transformer,
        num_groups=u.num_groups,
    )
    cond = ClassEmbedder(config.data.num_classes, u.context_dim) if class_conditional else None
    return LatentDenoiser(diffusion_model=unet, cond_stage_model=cond)


def build_schedule(config: ml_collections.ConfigDict) -> diffusion.NoiseSchedule:
    """The training noise schedule from `config.diffusion`."""
    d = config.diffusion
    return diffusion.NoiseSchedule.create(
        d.schedule,
        num_timesteps=d.num_timesteps,
        beta_start=d.beta_start,
        beta_end=d.beta_end,
        rescale_zero_snr=d.rescale_zero_snr,
    )
