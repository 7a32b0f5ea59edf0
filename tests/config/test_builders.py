"""The quickstart schema goes through `models.factory` and builds exactly the modules it always
built: same hyperparameters, same parameter trees, same initial values."""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.config import builders
from ldm_jax.config.files import load_config_file
from ldm_jax.config.model_config import model_config
from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.models.conditioning import ClassEmbedder
from ldm_jax.models.latent_denoiser import LatentDenoiser
from ldm_jax.models.unet import UNetModel

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


def _tiny_model(key, cond, in_channels=4, **unet):
    unet = dict(
        image_size=4,
        in_channels=in_channels,
        out_channels=4,
        model_channels=32,
        channel_mult=(1,),
        num_res_blocks=1,
        attention_resolutions=(1,),
        num_heads=1,
        **unet,
    )
    fs = dict(kind="kl", ch=32, ch_mult=(1,), num_res_blocks=1, z_channels=4, embed_dim=4)
    return dict(first_stage=fs, unet=unet, cond_stage=cond, conditioning_key=key)


@pytest.mark.parametrize("key", ["adm", "concat", "hybrid"])
def test_denoiser_conditioning_keys_feed_the_unet_as_the_reference(key):
    c = _config("tiny", "none")
    if key == "adm":
        c.model = _tiny_model("adm", {"kind": "none"}, num_classes=3)
    elif key == "concat":
        c.model = _tiny_model("concat", {"kind": "identity"}, in_channels=7)
    else:
        cond = dict(kind="class", n_classes=4, embed_dim=8, add_null_class=True)
        c.model = _tiny_model(
            "hybrid", cond, in_channels=7, use_spatial_transformer=True, context_dim=8
        )
    denoiser = builders.build_denoiser(c)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
    t = np.array([1, 500], np.int32)
    extra = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
    labels = np.array([0, 2], np.int32)
    y = {"adm": labels, "concat": extra, "hybrid": labels}[key]
    kwargs = {"concat": extra} if key == "hybrid" else {}
    params = nn.unbox(denoiser.init(jax.random.PRNGKey(0), z, t, y, **kwargs))["params"]
    # Random everywhere (the output conv is zero-initialised).
    params = jax.tree.map(lambda p: p + 0.05 * rng.standard_normal(p.shape), params)
    got = denoiser.apply({"params": params}, z, t, y, **kwargs)
    unet, up = denoiser.diffusion_model, {"params": params["diffusion_model"]}
    if key == "adm":
        want = unet.apply(up, z, t, None, y=labels)
    elif key == "concat":
        want = unet.apply(up, np.concatenate([z, extra], -1), t, None)
    else:
        cond = denoiser.cond_stage_model
        ctx = cond.apply({"params": params["cond_stage_model"]}, labels)  # [2, 1, 8]
        want = unet.apply(up, np.concatenate([z, extra], -1), t, ctx)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert float(np.abs(np.asarray(got)).max()) > 0


def test_unconditional_denoiser_refuses_labels():
    c = _config("tiny", "none")
    denoiser = builders.build_denoiser(c)
    z, t = jnp.zeros((1, 16, 16, 2)), jnp.zeros((1,), jnp.int32)
    with pytest.raises(ValueError, match="unconditional"):
        denoiser.init(jax.random.PRNGKey(0), z, t, jnp.zeros((1,), jnp.int32))


def test_every_paper_config_has_a_condition_kind_and_hybrid_models_initialise():
    """Each paper/SD model maps onto one training recipe; the hybrid SD inpainting U-Net gets
    both context and concat channels at init (its parameter tree then has 9 input channels)."""
    root = os.path.join(ROOT, "configs")
    expected = {
        "paper/bsr_sr.py": "superres",
        "paper/inpainting_big.py": "inpaint",
        "paper/semantic_synthesis256.py": "semantic",
        "paper/txt2img_1p4b.py": "text",
        "paper/layout2img_openimages256.py": "text",
        "paper/cin256_v2.py": "class",
        "paper/celebahq_ldm_vq4.py": "none",
        "sd/sd_v1.py": "context",
        "sd/sd_v1_inpainting.py": "hybrid_inpaint",
    }
    for name, kind in expected.items():
        assert builders.condition_kind(load_config_file(os.path.join(root, name))) == kind, name
    tiny = load_config_file(os.path.join(root, "sd/sd_v1_inpainting.py"), "tiny")
    params = builders.abstract_denoiser_params(tiny)
    kernel = params["diffusion_model"]["input_blocks_0_0"]["kernel"]
    assert kernel.shape[2] == 9  # z (4) + mask (1) + masked-image latent (4)
