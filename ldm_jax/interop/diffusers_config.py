"""diffusers `config.json` <-> our module hyperparameters (UNet2DConditionModel, AutoencoderKL).

Only configurations our modules compute exactly are accepted; anything else raises
`UnsupportedConfigError` naming the field, so an import never silently changes the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.models.unet import UNetModel

_ATTN_DOWN, _PLAIN_DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
_ATTN_UP, _PLAIN_UP = "CrossAttnUpBlock2D", "UpBlock2D"
_MID = "UNetMidBlock2DCrossAttn"


class UnsupportedConfigError(ValueError):
    """A diffusers configuration that ldm_jax's modules cannot express."""


def _require(cfg: dict, key: str, allowed: Sequence[Any], model: str) -> None:
    if key in cfg and cfg[key] not in allowed:
        raise UnsupportedConfigError(
            f"{model} config {key}={cfg[key]!r} is not supported (supported: {list(allowed)})."
        )


def _uniform(value: Any, n: int, key: str, model: str) -> Any:
    if isinstance(value, (list, tuple)):
        if len(set(map(_hashable, value))) != 1:
            raise UnsupportedConfigError(
                f"{model} config {key}={value!r}: per-block values are not supported; ldm_jax "
                "uses one value for every block."
            )
        return value[0]
    return value


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _channel_mult(block_out: Sequence[int], model: str) -> tuple[int, tuple[int, ...]]:
    base = block_out[0]
    if any(c % base for c in block_out):
        raise UnsupportedConfigError(
            f"{model} block_out_channels={list(block_out)}: every width must be a multiple of the "
            "first (ldm_jax uses base width x channel_mult)."
        )
    return base, tuple(c // base for c in block_out)


def unet_from_config(cfg: dict[str, Any]) -> UNetModel:
    """A `UNetModel` computing what diffusers' UNet2DConditionModel with `cfg` computes."""
    name = "UNet2DConditionModel"
    for key, allowed in {
        "flip_sin_to_cos": [True],
        "freq_shift": [0],
        "act_fn": ["silu"],
        "mid_block_type": [_MID],
        "downsample_padding": [1],
        "mid_block_scale_factor": [1, 1.0],
        "center_input_sample": [False],
        "norm_eps": [1e-5],
        "time_embedding_type": ["positional"],
        "time_embedding_dim": [None],
        "time_embedding_act_fn": [None],
        "timestep_post_act": [None],
        "time_cond_proj_dim": [None],
        "conv_in_kernel": [3],
        "conv_out_kernel": [3],
        "class_embed_type": [None],
        "addition_embed_type": [None],
        "encoder_hid_dim": [None],
        "encoder_hid_dim_type": [None],
        "class_embeddings_concat": [False],
        "only_cross_attention": [False],
        "dual_cross_attention": [False],
        "mid_block_only_cross_attention": [None, False],
        "cross_attention_norm": [None],
        "resnet_skip_time_act": [False],
        "resnet_out_scale_factor": [1, 1.0],
        "resnet_time_scale_shift": ["default", "scale_shift"],
        "attention_type": ["default"],
        "reverse_transformer_layers_per_block": [None],
    }.items():
        _require(cfg, key, allowed, name)
    down, up = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    levels = len(down)
    for t in down:
        if t not in (_ATTN_DOWN, _PLAIN_DOWN):
            raise UnsupportedConfigError(f"{name} down block type {t!r} is not supported.")
    if len(up) != levels or any(u not in (_ATTN_UP, _PLAIN_UP) for u in up):
        raise UnsupportedConfigError(f"{name} up_block_types={up} are not supported.")
    attn_levels = [i for i, t in enumerate(down) if t == _ATTN_DOWN]
    if [levels - 1 - i for i, t in enumerate(up) if t == _ATTN_UP][::-1] != attn_levels:
        raise UnsupportedConfigError(
            f"{name}: up_block_types={up} must mirror down_block_types={down} (ldm_jax puts "
            "attention at the same resolutions on the way down and up)."
        )
    base, mult = _channel_mult(cfg["block_out_channels"], name)
    heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * levels
    # Transformers sit at the attention levels (down and up) and in the middle (last level).
    used = [(cfg["block_out_channels"][i], heads[i]) for i in attn_levels]
    used.append((cfg["block_out_channels"][-1], heads[-1]))
    num_heads = num_head_channels = -1
    if len({h for _, h in used}) == 1:
        num_heads = used[0][1]
    elif len({c // h for c, h in used}) == 1 and all(c % h == 0 for c, h in used):
        num_head_channels = used[0][0] // used[0][1]
    else:
        raise UnsupportedConfigError(
            f"{name}: attention heads {heads} for widths {cfg['block_out_channels']} are neither "
            "a constant head count nor a constant head width."
        )
    if cfg.get("num_class_embeds") is not None and cfg.get("class_embed_type") is not None:
        raise UnsupportedConfigError(f"{name}: class_embed_type must be None.")
    return UNetModel(
        model_channels=base,
        out_channels=cfg.get("out_channels", 4),
        num_res_blocks=_uniform(cfg.get("layers_per_block", 2), levels, "layers_per_block", name),
        attention_resolutions=tuple(2**i for i in attn_levels),
        channel_mult=mult,
        num_heads=num_heads,
        num_head_channels=num_head_channels,
        transformer_depth=_uniform(
            cfg.get("transformer_layers_per_block", 1), levels, "transformer_layers_per_block", name
        ),
        context_dim=_uniform(
            cfg.get("cross_attention_dim", 1280), levels, "cross_attention_dim", name
        ),
        num_classes=cfg.get("num_class_embeds"),
        dropout=float(cfg.get("dropout", 0.0)),
        use_scale_shift_norm=cfg.get("resnet_time_scale_shift", "default") == "scale_shift",
        use_linear_in_transformer=bool(cfg.get("use_linear_projection", False)),
        legacy=False,
        num_groups=cfg.get("norm_num_groups", 32),
    )


def unet_to_config(unet: UNetModel, in_channels: int, sample_size: int = 32) -> dict[str, Any]:
    """The UNet2DConditionModel config equivalent to `unet` (which must have a context_dim)."""
    if unet.context_dim is None:
        raise UnsupportedConfigError(
            "diffusers' UNet2DConditionModel always has cross-attention; this U-Net has "
            "context_dim=None (self-attention only), which it cannot express."
        )
    if not unet.conv_resample:
        raise UnsupportedConfigError("diffusers' U-Net always resamples with convolutions.")
    levels = len(unet.channel_mult)
    widths = [unet.model_channels * m for m in unet.channel_mult]
    attn = [2**i in unet.attention_resolutions for i in range(levels)]
    if unet.num_head_channels == -1:
        heads = [unet.num_heads] * levels
    else:
        heads = [max(w // unet.num_head_channels, 1) for w in widths]
    return {
        "_class_name": "UNet2DConditionModel",
        "sample_size": sample_size,
        "in_channels": in_channels,
        "out_channels": unet.out_channels,
        "down_block_types": [_ATTN_DOWN if a else _PLAIN_DOWN for a in attn],
        "mid_block_type": _MID,
        "up_block_types": [_ATTN_UP if a else _PLAIN_UP for a in reversed(attn)],
        "block_out_channels": widths,
        "layers_per_block": unet.num_res_blocks,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "act_fn": "silu",
        "norm_num_groups": unet.num_groups,
        "norm_eps": 1e-5,
        "cross_attention_dim": unet.context_dim,
        "transformer_layers_per_block": unet.transformer_depth,
        "attention_head_dim": heads,
        "use_linear_projection": unet.use_linear_in_transformer,
        "num_class_embeds": unet.num_classes,
        "resnet_time_scale_shift": "scale_shift" if unet.use_scale_shift_norm else "default",
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "dropout": unet.dropout,
    }


_VAE_DOWN = ("DownEncoderBlock2D", "AttnDownEncoderBlock2D")
_VAE_UP = ("UpDecoderBlock2D", "AttnUpDecoderBlock2D")


def vae_common_from_config(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """Encoder/decoder hyperparameters shared by AutoencoderKL and VQModel configs."""
    for key, allowed in {
        "act_fn": ["silu"],
        "mid_block_add_attention": [True],
        "use_quant_conv": [True],
        "use_post_quant_conv": [True],
        "norm_type": ["group"],
    }.items():
        _require(cfg, key, allowed, name)
    down = list(cfg.get("down_block_types", ["DownEncoderBlock2D"]))
    up = list(cfg.get("up_block_types", ["UpDecoderBlock2D"]))
    if any(t not in _VAE_DOWN for t in down) or any(t not in _VAE_UP for t in up):
        raise UnsupportedConfigError(f"{name} block types {down} / {up} are not supported.")
    levels = len(down)
    attn_down = [i for i, t in enumerate(down) if t == _VAE_DOWN[1]]
    attn_up = sorted(levels - 1 - i for i, t in enumerate(up) if t == _VAE_UP[1])
    if attn_down != attn_up or len(up) != levels:
        raise UnsupportedConfigError(
            f"{name}: attention blocks must sit at the same levels in encoder and decoder."
        )
    resolution = 2 ** (levels + 4)
    ch, mult = _channel_mult(cfg["block_out_channels"], name)
    return dict(
        ch=ch,
        ch_mult=mult,
        num_res_blocks=int(cfg.get("layers_per_block", 1)),
        in_channels=cfg.get("in_channels", 3),
        out_ch=cfg.get("out_channels", 3),
        attn_resolutions=tuple(resolution >> i for i in attn_down),
        resolution=resolution,
        num_groups=cfg.get("norm_num_groups", 32),
    )


def vae_common_to_config(ae: Any) -> dict[str, Any]:
    """The diffusers encoder/decoder fields for one of our autoencoders."""
    levels = len(ae.ch_mult)
    attn = [(ae.resolution >> i) in tuple(ae.attn_resolutions) for i in range(levels)]
    return {
        "in_channels": ae.in_channels,
        "out_channels": ae.out_ch,
        "down_block_types": [_VAE_DOWN[int(a)] for a in attn],
        "up_block_types": [_VAE_UP[int(a)] for a in reversed(attn)],
        "block_out_channels": [ae.ch * m for m in ae.ch_mult],
        "layers_per_block": ae.num_res_blocks,
        "act_fn": "silu",
        "norm_num_groups": ae.num_groups,
        "sample_size": ae.resolution,
    }


def autoencoder_kl_from_config(cfg: dict[str, Any]) -> AutoencoderKL:
    """An `AutoencoderKL` computing what diffusers' AutoencoderKL with `cfg` computes."""
    common = vae_common_from_config(cfg, "AutoencoderKL")
    latent = cfg.get("latent_channels", 4)
    return AutoencoderKL(z_channels=latent, embed_dim=latent, **common)


def autoencoder_kl_to_config(ae: AutoencoderKL, scaling_factor: float = 1.0) -> dict[str, Any]:
    """The diffusers AutoencoderKL config equivalent to `ae`."""
    if ae.z_channels != ae.embed_dim:
        raise UnsupportedConfigError(
            f"diffusers' AutoencoderKL needs z_channels == embed_dim (got {ae.z_channels} and "
            f"{ae.embed_dim})."
        )
    return {
        "_class_name": "AutoencoderKL",
        **vae_common_to_config(ae),
        "latent_channels": ae.embed_dim,
        "scaling_factor": scaling_factor,
    }
