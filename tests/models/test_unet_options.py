"""U-Net options of the reference code: resblock_updown, AttentionBlock U-Nets, class vectors,
concat inputs and the head conventions."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.models.layers import GroupNorm32
from ldm_jax.models.unet import ResBlock, UNetModel, attention_heads


def _randomise(params, scale=0.1):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
    return tree.unflatten(
        [scale * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves, strict=True)]
    )


def _conv(p, x, pad=1):
    return nn.Conv(p["kernel"].shape[-1], p["kernel"].shape[:2], padding=pad).apply(
        {"params": p}, x
    )


@pytest.mark.parametrize("mode", ["up", "down"])
def test_resblock_updown_resamples_h_and_x_between_activation_and_conv(mode):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 32))
    emb = jax.random.normal(jax.random.PRNGKey(1), (2, 16))
    block = ResBlock(up=mode == "up", down=mode == "down")
    params = _randomise(nn.unbox(block.init(jax.random.PRNGKey(2), x, emb))["params"])
    assert set(params) == {
        "in_layers_0",
        "in_layers_2",
        "emb_layers_1",
        "out_layers_0",
        "out_layers_3",
    }
    out = block.apply({"params": params}, x, emb)
    side = 16 if mode == "up" else 4
    assert out.shape == (2, side, side, 32)

    def resample(a):
        if mode == "up":
            return jnp.repeat(jnp.repeat(a, 2, axis=1), 2, axis=2)
        return a.reshape(2, 4, 2, 4, 2, -1).mean(axis=(2, 4))

    norm = lambda name, a: GroupNorm32(32, 1e-5).apply({"params": params[name]}, a)
    h = resample(nn.silu(norm("in_layers_0", x)))  # norm + act, then resample, then conv
    h = _conv(params["in_layers_2"], h)
    e = nn.Dense(32).apply({"params": params["emb_layers_1"]}, nn.silu(emb))[:, None, None]
    h = _conv(params["out_layers_3"], nn.silu(norm("out_layers_0", h + e)))
    np.testing.assert_allclose(out, resample(x) + h, rtol=1e-4, atol=1e-4)


def _abstract(unet, x_shape, ctx_dim=None, y=False):
    args = [jax.ShapeDtypeStruct(x_shape, jnp.float32), jax.ShapeDtypeStruct((1,), jnp.int32)]
    args.append(None if ctx_dim is None else jax.ShapeDtypeStruct((1, 3, ctx_dim), jnp.float32))
    args.append(jax.ShapeDtypeStruct((1,), jnp.int32) if y else None)
    return jax.eval_shape(lambda *a: nn.unbox(unet.init(jax.random.PRNGKey(0), *a)), *args)[
        "params"
    ]


def test_attention_block_unet_with_updown_classes_and_concat_input():
    unet = UNetModel(
        model_channels=32,
        out_channels=3,
        num_res_blocks=1,
        attention_resolutions=(2,),
        channel_mult=(1, 2),
        num_heads=2,
        use_spatial_transformer=False,
        resblock_updown=True,
        use_scale_shift_norm=True,
        num_classes=5,
    )
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 7))  # 3 latent + 4 concat channels
    t, y = jnp.array([1, 500]), jnp.array([0, 4])
    params = _randomise(
        jax.eval_shape(lambda: nn.unbox(unet.init(jax.random.PRNGKey(1), x, t, None, y)))
    )
    params = params["params"]
    out = jax.jit(lambda p: unet.apply({"params": p}, x, t, None, y))(params)
    assert out.shape == (2, 8, 8, 3)
    assert params["input_blocks_0_0"]["kernel"].shape == (3, 3, 7, 32)
    assert params["label_emb"]["embedding"].shape == (5, 128)
    assert "in_layers_0" in params["input_blocks_2_0"]  # the down ResBlock
    assert "in_layers_0" in params["output_blocks_1_2"]  # the up ResBlock, after the attention
    assert set(params["input_blocks_3_1"]) == {"norm", "qkv", "proj_out"}  # AttentionBlock
    assert params["input_blocks_1_0"]["emb_layers_1"]["kernel"].shape == (128, 64)  # scale+shift
    with pytest.raises(ValueError, match="use_spatial_transformer"):
        jax.eval_shape(lambda p: unet.apply({"params": p}, x, t, jnp.zeros((2, 1, 8)), y), params)


def test_conv_resample_false_has_no_resampling_parameters():
    base = dict(model_channels=32, out_channels=4, num_res_blocks=1, attention_resolutions=())
    kw = dict(channel_mult=(1, 1), num_heads=1, use_spatial_transformer=False)
    with_conv = _abstract(UNetModel(**base, **kw), (1, 8, 8, 4))
    without = _abstract(UNetModel(**base, **kw, conv_resample=False), (1, 8, 8, 4))
    assert "input_blocks_2_0" in with_conv and "input_blocks_2_0" not in without
    assert "output_blocks_1_1" in with_conv and "output_blocks_1_1" not in without


def test_linear_projection_in_transformer():
    unet = UNetModel(
        model_channels=32,
        out_channels=4,
        num_res_blocks=1,
        attention_resolutions=(1,),
        channel_mult=(1,),
        num_head_channels=16,
        context_dim=24,
        use_linear_in_transformer=True,
    )
    params = _abstract(unet, (1, 4, 4, 4), ctx_dim=24)
    assert params["input_blocks_1_1"]["proj_in"]["kernel"].shape == (32, 32)  # Dense, not conv


@pytest.mark.parametrize(
    "args, expected",
    [
        # SpatialTransformer, num_head_channels: heads = ch // nhc; legacy: width ch // heads.
        ((256, -1, 32, -1, True, True, False), (8, 32)),
        # SpatialTransformer, num_heads, legacy=False (txt2img-1p4B): 320 / 8 = 40 per head.
        ((320, 8, -1, -1, True, False, False), (8, 40)),
        # AttentionBlock, legacy, num_heads: heads = num_heads (num_heads_upsample in decoder).
        ((384, 8, -1, -1, False, True, False), (8, 48)),
        ((384, 8, -1, 4, False, True, True), (4, 96)),
        # AttentionBlock, num_head_channels: heads = ch // nhc.
        ((672, -1, 32, -1, False, True, True), (21, 32)),
        # AttentionBlock, non-legacy, num_heads not dividing ch: ch // (ch // num_heads).
        ((64, 13, -1, -1, False, False, False), (16, 4)),
    ],
)
def test_attention_head_conventions(args, expected):
    assert attention_heads(*args) == expected


def test_attention_head_width_must_divide_channels():
    with pytest.raises(ValueError, match="not divisible"):
        attention_heads(96, 7, -1, -1, False, False, False)  # 96 % (96 // 7) != 0
