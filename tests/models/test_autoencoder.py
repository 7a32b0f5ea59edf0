"""First-stage autoencoder: shapes for every f, posterior maths, parameter names."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.models.autoencoder import AutoencoderKL, DiagonalGaussian


def _tiny_ae(levels: int, **kw) -> AutoencoderKL:
    return AutoencoderKL(
        ch=32,
        ch_mult=(1,) * levels,
        num_res_blocks=1,
        z_channels=3,
        embed_dim=2,
        in_channels=3,
        out_ch=3,
        resolution=64,
        **kw,
    )


@pytest.mark.parametrize("m", [0, 1, 2, 3, 4, 5])
def test_shapes_for_every_downsampling_factor(m):
    f = 2**m
    ae = _tiny_ae(m + 1, attn_resolutions=(64 // f,))
    x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    variables = jax.eval_shape(ae.init, jax.random.PRNGKey(0), x)
    post = jax.eval_shape(lambda v, x: ae.apply(v, x, method=ae.encode), variables, x)
    assert post.mean.shape == (2, 64 // f, 64 // f, 2)
    assert post.logvar.shape == (2, 64 // f, 64 // f, 2)
    rec = jax.eval_shape(lambda v, z: ae.apply(v, z, method=ae.decode), variables, post.mean)
    assert rec.shape == (2, 64, 64, 3)
    assert ae.downsample_factor == f


def test_forward_and_reference_parameter_names():
    ae = AutoencoderKL(
        ch=32,
        ch_mult=(1, 2),
        num_res_blocks=1,
        z_channels=4,
        embed_dim=3,
        in_channels=1,
        out_ch=1,
        resolution=16,
        attn_resolutions=(8,),
    )
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 1))
    params = nn.unbox(ae.init(jax.random.PRNGKey(0), x))["params"]
    rec, post = jax.jit(lambda p, x, r: ae.apply({"params": p}, x, r))(
        params, x, jax.random.PRNGKey(2)
    )
    assert rec.shape == x.shape and np.isfinite(np.asarray(rec)).all()
    enc, dec = params["encoder"], params["decoder"]
    for name in (
        "conv_in",
        "down_0_block_0",
        "down_0_downsample",
        "down_1_block_0",
        "down_1_attn_0",
        "mid_block_1",
        "mid_attn_1",
        "mid_block_2",
        "norm_out",
        "conv_out",
    ):
        assert name in enc, name
    assert "nin_shortcut" in enc["down_1_block_0"]  # 32 -> 64 channels
    for name in ("up_1_block_1", "up_1_upsample", "up_0_block_1", "up_1_attn_0"):
        assert name in dec, name
    assert enc["conv_out"]["kernel"].shape[-1] == 8  # double_z: 2 * z_channels
    assert params["quant_conv"]["kernel"].shape == (1, 1, 8, 6)  # 2*z -> 2*embed_dim
    assert params["post_quant_conv"]["kernel"].shape == (1, 1, 3, 4)


def test_downsample_pads_right_and_bottom_only():
    """The autoencoder's stride-2 conv pads (0, 1): output pixel (0, 0) sees input [0:3, 0:3]."""
    from ldm_jax.models.layers import Downsample

    down = Downsample(with_conv=True, asymmetric_padding=True)
    x = jnp.zeros((1, 8, 8, 1)).at[0, 0, 0, 0].set(1.0)
    params = nn.unbox(down.init(jax.random.PRNGKey(0), x))["params"]
    kernel = params["conv"]["kernel"]  # [3, 3, 1, 1]
    y = down.apply({"params": params}, x)
    assert y.shape == (1, 4, 4, 1)
    expected = kernel[0, 0, 0, 0] + params["conv"]["bias"][0]
    np.testing.assert_allclose(y[0, 0, 0, 0], expected, rtol=1e-6)


def test_posterior_kl_and_sampling_against_closed_form():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(2, 3, 3, 2)).astype(np.float32)
    logvar = rng.normal(size=(2, 3, 3, 2)).astype(np.float32)
    post = DiagonalGaussian.from_moments(jnp.concatenate([mean, logvar], -1))
    expected = 0.5 * np.sum(mean**2 + np.exp(logvar) - 1 - logvar, axis=(1, 2, 3))
    np.testing.assert_allclose(post.kl(), expected, rtol=1e-5)
    z = post.sample(jax.random.PRNGKey(0))
    eps = (np.asarray(z) - mean) / np.exp(0.5 * logvar)
    np.testing.assert_allclose(
        eps, jax.random.normal(jax.random.PRNGKey(0), mean.shape), rtol=1e-4, atol=1e-5
    )
    clipped = DiagonalGaussian.from_moments(jnp.full((1, 1, 1, 2), 100.0))
    assert float(clipped.logvar.max()) == 20.0
