"""The quickstart schema goes through `models.factory` and builds exactly the modules it always
built: same hyperparameters, same parameter trees, same initial values."""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.config_files import load_config_file
from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.models.conditioning import ClassEmbedder
from ldm_jax.models.latent_denoiser import LatentDenoiser
from ldm_jax.models.unet import UNetModel
from ldm_jax.training import builders
from ldm_jax.training.model_config import model_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(arg, kind):
    c = load_config_file(os.path.join(ROOT, "configs", "quickstart.py"), arg)
    c.conditioning.kind = kind
    return c


def _direct_autoencoder(c):
    """The quickstart's stage 1, constructed field by field (the pre-factory builder)."""
    ae = c.autoencoder
    return AutoencoderKL(
        ch=ae.ch,
        ch_mult=tuple(ae.ch_mult),
        num_res_blocks=ae.num_res_blocks,
        z_channels=ae.z_channels,
        embed_dim=ae.embed_dim,
        in_channels=c.data.channels,
        out_ch=c.data.channels,
        attn_resolutions=tuple(ae.attn_resolutions),
        resolution=c.data.image_size,
        dropout=ae.dropout,
        num_groups=ae.num_groups,
    )


def _direct_denoiser(c):
    u, cls = c.unet, c.conditioning.kind == "class"
    unet = UNetModel(
        model_channels=u.model_channels,
        out_channels=c.autoencoder.embed_dim,
        num_res_blocks=u.num_res_blocks,
        attention_resolutions=tuple(u.attention_resolutions),
        channel_mult=tuple(u.channel_mult),
        num_heads=u.num_heads,
        num_head_channels=u.num_head_channels,
        transformer_depth=u.transformer_depth,
        context_dim=u.context_dim if cls else None,
        dropout=u.dropout,
        use_scale_shift_norm=u.use_scale_shift_norm,
        use_linear_in_transformer=u.use_linear_in_transformer,
        num_groups=u.num_groups,
    )
    cond = ClassEmbedder(c.data.num_classes, u.context_dim) if cls else None
    return LatentDenoiser(diffusion_model=unet, cond_stage_model=cond)


@pytest.mark.parametrize("arg", [None, "tiny"])
@pytest.mark.parametrize("kind", ["class", "none"])
def test_quickstart_modules_are_unchanged(arg, kind):
    c = _config(arg, kind)
    assert builders.build_autoencoder(c) == _direct_autoencoder(c)
    got, want = builders.build_denoiser(c), _direct_denoiser(c)
    assert got.diffusion_model == want.diffusion_model
    assert got.cond_stage_model == want.cond_stage_model
    assert got.conditioning_key == ("crossattn" if kind == "class" else None)
    f = 2 ** (len(c.autoencoder.ch_mult) - 1)
    side = c.data.image_size // f
    assert builders.latent_shape(c) == (side, side, c.autoencoder.embed_dim)


@pytest.mark.parametrize("kind", ["class", "none"])
def test_quickstart_init_is_unchanged(kind):
    """Same parameter tree and the same initial values for the same key (tiny config)."""
    c = _config("tiny", kind)
    h, w, ch = builders.latent_shape(c)
    labels = jnp.zeros((1,), jnp.int32) if kind == "class" else None
    args = (jnp.zeros((1, h, w, ch)), jnp.zeros((1,), jnp.int32), labels)
    key = jax.random.PRNGKey(3)
    init = lambda module: jax.jit(lambda k: nn.unbox(module.init(k, *args)))(key)["params"]
    got, want = init(builders.build_denoiser(c)), init(_direct_denoiser(c))
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
    abstract = builders.abstract_denoiser_params(c)
    assert jax.tree.map(lambda x: x.shape, abstract) == jax.tree.map(lambda x: x.shape, got)


def test_model_section_wins_over_the_quickstart_sections():
    c = _config("tiny", "class")
    model = model_config(c)
    model["cond_stage"] = {"kind": "none"}
    model["conditioning_key"] = None
    model["unet"]["context_dim"] = None
    c.model = model
    denoiser = builders.build_denoiser(c)
    assert denoiser.cond_stage_model is None and denoiser.conditioning_key is None
    assert denoiser.diffusion_model.context_dim is None
