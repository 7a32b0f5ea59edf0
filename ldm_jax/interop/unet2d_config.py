"""diffusers `UNet2DModel` (no cross-attention) -> our `UNetModel` with `AttentionBlock`s.

UNet2DModel is the paper's U-Net without SpatialTransformers: the unconditional and
super-resolution LDMs of diffusers' CompVis pipelines. Its attention (`Attention` with
`group_norm`, Linear `to_q`/`to_k`/`to_v`/`to_out.0`, residual) is the reference `AttentionBlock`
whose kernel-1 convolutions `qkv` and `proj_out` hold the same numbers: `to_q`, `to_k`, `to_v` are
stacked q|k|v into `qkv`, which is the `QKVAttention` channel order (`use_new_attention_order`).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ldm_jax.interop.diffusers_config import UnsupportedConfigError, _channel_mult, _require
from ldm_jax.interop.diffusers_names import unet_to_diffusers
from ldm_jax.models.unet import UNetModel

_NAME = "UNet2DModel"
_ATTN_DOWN, _PLAIN_DOWN = "AttnDownBlock2D", "DownBlock2D"
_ATTN_UP, _PLAIN_UP = "AttnUpBlock2D", "UpBlock2D"
_ATTN_RENAME = {"norm": "group_norm", "proj_out": "to_out.0", "qkv": "qkv"}


def unet2d_from_config(cfg: dict[str, Any]) -> UNetModel:
    """A `UNetModel` computing what diffusers' UNet2DModel with `cfg` computes."""
    for key, allowed in {
        "time_embedding_type": ["positional"],
        "flip_sin_to_cos": [True],
        "freq_shift": [0],
        "center_input_sample": [False],
        "act_fn": ["silu"],
        "mid_block_type": ["UNetMidBlock2D"],
        "add_attention": [True],
        "downsample_padding": [1],
        "downsample_type": ["conv"],
        "upsample_type": ["conv"],
        "mid_block_scale_factor": [1, 1.0],
        "norm_eps": [1e-5],
        "class_embed_type": [None],
        "resnet_time_scale_shift": ["default", "scale_shift"],
    }.items():
        _require(cfg, key, allowed, _NAME)
    groups = cfg.get("norm_num_groups", 32)
    attn_groups = cfg.get("attn_norm_num_groups")
    if attn_groups not in (None, groups):
        raise UnsupportedConfigError(
            f"{_NAME}: attn_norm_num_groups={attn_groups} differs from norm_num_groups={groups}."
        )
    if cfg.get("resnet_time_scale_shift") == "scale_shift" and attn_groups is None:
        raise UnsupportedConfigError(
            f"{_NAME}: with resnet_time_scale_shift='scale_shift' and no attn_norm_num_groups "
            "the mid-block attention has no GroupNorm, which the paper's AttentionBlock always has."
        )
    down = list(cfg.get("down_block_types", ()))
    up = list(cfg.get("up_block_types", ()))
    if any(t not in (_ATTN_DOWN, _PLAIN_DOWN) for t in down) or len(up) != len(down):
        raise UnsupportedConfigError(f"{_NAME} down_block_types={down} are not supported.")
    if any(t not in (_ATTN_UP, _PLAIN_UP) for t in up):
        raise UnsupportedConfigError(f"{_NAME} up_block_types={up} are not supported.")
    attn = [i for i, t in enumerate(down) if t == _ATTN_DOWN]
    if sorted(len(up) - 1 - i for i, t in enumerate(up) if t == _ATTN_UP) != attn:
        raise UnsupportedConfigError(
            f"{_NAME}: up_block_types={up} must mirror down_block_types={down}."
        )
    base, mult = _channel_mult(cfg["block_out_channels"], _NAME)
    head_dim = cfg.get("attention_head_dim", 8)
    if isinstance(head_dim, (list, tuple)):
        raise UnsupportedConfigError(f"{_NAME}: per-block attention_head_dim is not supported.")
    layers = cfg.get("layers_per_block", 2)
    if isinstance(layers, (list, tuple)):
        raise UnsupportedConfigError(f"{_NAME}: per-block layers_per_block is not supported.")
    return UNetModel(
        model_channels=base,
        out_channels=cfg.get("out_channels", 3),
        num_res_blocks=int(layers),
        attention_resolutions=tuple(2**i for i in attn),
        channel_mult=mult,
        num_heads=1 if head_dim is None else -1,
        num_head_channels=-1 if head_dim is None else int(head_dim),
        use_spatial_transformer=False,
        num_classes=cfg.get("num_class_embeds"),
        dropout=float(cfg.get("dropout", 0.0)),
        use_scale_shift_norm=cfg.get("resnet_time_scale_shift", "default") == "scale_shift",
        use_new_attention_order=True,
        num_groups=groups,
    )


def unet2d_name(compvis_name: str, num_res_blocks: int) -> str:
    """A U-Net tensor name, paper layout -> UNet2DModel layout (`qkv` is the fused q|k|v)."""
    name = unet_to_diffusers(compvis_name, num_res_blocks)
    m = re.fullmatch(r"(.*attentions\.\d+\.)(norm|proj_out|qkv)\.(weight|bias)", name)
    return f"{m.group(1)}{_ATTN_RENAME[m.group(2)]}.{m.group(3)}" if m else name


def fuse_attention(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stacks each attention's Linear `to_q`/`to_k`/`to_v` into a kernel-1 conv `qkv` [3C, C, 1]
    and lays `to_out.0` out as a kernel-1 conv [C, C, 1]."""
    out = dict(tensors)
    for name in [k for k in tensors if re.search(r"attentions\.\d+\.to_q\.weight$", k)]:
        prefix = name[: -len("to_q.weight")]
        for leaf in ("weight", "bias"):
            parts = [f"{prefix}to_{x}.{leaf}" for x in "qkv"]
            missing = [p for p in parts if p not in tensors]
            if missing:
                raise UnsupportedConfigError(f"{_NAME} weights lack {missing}.")
            fused = np.concatenate([np.asarray(tensors[p]) for p in parts], axis=0)
            out[f"{prefix}qkv.{leaf}"] = fused[:, :, None] if leaf == "weight" else fused
            for p in parts:
                del out[p]
        proj = f"{prefix}to_out.0.weight"
        if proj in out and np.ndim(out[proj]) == 2:
            out[proj] = np.asarray(out[proj])[:, :, None]
    return out
