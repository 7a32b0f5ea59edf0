"""diffusers networks equal to a benchmark preset's (same widths, depths, heads, parameters).

A preset's U-Net (reference `unet_config.params` keys) becomes a `UNet2DConditionModel`: level l
gets cross-attention blocks when its downsampling rate 2**l is in `attention_resolutions`, and
each level's head count is `num_heads` or width // `num_head_channels`, as the reference. The
first stage becomes an `AutoencoderKL` with the same block widths (mid-block attention, as ours).
"""

from __future__ import annotations

import diffusers
import torch

from ldm_jax.benchmarks.presets import Preset


def _heads(width: int, unet: dict) -> int:
    nhc = unet.get("num_head_channels", -1)
    return unet["num_heads"] if nhc in (-1, None) else width // nhc


def build_unet(preset: Preset) -> diffusers.UNet2DConditionModel:
    """The preset's U-Net as diffusers' `UNet2DConditionModel` (cross-attention U-Nets only)."""
    u = preset.unet
    if not (u.get("use_spatial_transformer") and preset.context_len):
        raise ValueError(f"peers: preset {preset.name!r} has no cross-attention U-Net to mirror.")
    widths = [u["model_channels"] * m for m in u["channel_mult"]]
    attn = [2**level in tuple(u["attention_resolutions"]) for level in range(len(widths))]
    return diffusers.UNet2DConditionModel(
        sample_size=u["image_size"],
        in_channels=u["in_channels"],
        out_channels=u["out_channels"],
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        block_out_channels=tuple(widths),
        layers_per_block=u["num_res_blocks"],
        cross_attention_dim=u["context_dim"],
        attention_head_dim=tuple(_heads(w, u) for w in widths),
        transformer_layers_per_block=u.get("transformer_depth", 1),
        use_linear_projection=bool(u.get("use_linear_in_transformer", False)),
        norm_num_groups=u.get("num_groups", 32),
    )


def build_autoencoder(preset: Preset) -> diffusers.AutoencoderKL:
    """The preset's KL first stage as diffusers' `AutoencoderKL`."""
    fs = preset.first_stage
    if (
        fs["kind"] != "kl"
        or tuple(fs.get("attn_resolutions", ()))
        or fs["z_channels"] != fs["embed_dim"]
    ):
        raise ValueError(f"peers: preset {preset.name!r} has no KL autoencoder diffusers mirrors.")
    n = len(fs["ch_mult"])
    return diffusers.AutoencoderKL(
        in_channels=fs.get("in_channels", 3),
        out_channels=fs.get("out_ch", 3),
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(fs["ch"] * m for m in fs["ch_mult"]),
        layers_per_block=fs["num_res_blocks"],
        latent_channels=fs["z_channels"],
        norm_num_groups=fs.get("num_groups", 32),
        sample_size=fs["resolution"],
    )


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
