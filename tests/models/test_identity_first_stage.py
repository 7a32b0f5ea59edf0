"""The identity first stage (f = 1, pixel space): the module, its schema kind, and f = 1 wherever
a first stage's downsampling factor, latent shape or latent kind is asked for."""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.config import builders, schema
from ldm_jax.config.files import load_config_file
from ldm_jax.config.validation import ConfigError, validate_config
from ldm_jax.models import factory, specs
from ldm_jax.models.identity_first_stage import IdentityFirstStage
from ldm_jax.sampling.generate import decode_latents, encode_images
from ldm_jax.workdir import latent_cache, reader, writer

ROOT = pathlib.Path(__file__).resolve().parents[2]
LDM1 = ROOT / "configs" / "autoencoders" / "fashion_mnist" / "identity_ldm1.py"
EMOJI_LDM1 = ROOT / "configs" / "autoencoders" / "emoji" / "identity_ldm1.py"
KL = dict(kind="kl", ch=32, ch_mult=(1, 2, 4, 4), num_res_blocks=1, z_channels=4, embed_dim=4)
VQ = dict(KL, kind="vq", ch_mult=(1, 2), embed_dim=3, n_embed=16)


def test_module_returns_its_input_and_has_no_parameters():
    ae = IdentityFirstStage(channels=3)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 6, 3), minval=-1, maxval=1)
    variables = ae.init(jax.random.PRNGKey(1), x)
    assert jax.tree_util.tree_leaves(variables) == []
    for method in (ae.encode, ae.encode_to_prequant, ae.decode, ae.decode_latent):
        out = ae.apply({"params": {}}, x, method=method)
        assert out.dtype == jnp.float32 and out.shape == x.shape
        np.testing.assert_array_equal(out, x)
    rec, loss = ae.apply({"params": {}}, x, jax.random.PRNGKey(2))
    np.testing.assert_array_equal(rec, x)
    assert float(loss) == 0.0
    half = ae.apply({"params": {}}, x.astype(jnp.bfloat16), method=ae.encode_to_prequant)
    assert half.dtype == jnp.float32
    np.testing.assert_array_equal(half, x.astype(jnp.bfloat16).astype(jnp.float32))
    assert (ae.downsample_factor, ae.embed_dim, ae.in_channels, ae.out_ch) == (1, 3, 3, 3)


def test_deterministic_latents_of_identity_and_vq_not_kl():
    modules = {kind: factory.build_first_stage(cfg) for kind, cfg in (("kl", KL), ("vq", VQ))}
    modules["identity"] = factory.build_first_stage({"kind": "identity"})
    assert {k: factory.first_stage_kind_of(m) for k, m in modules.items()} == {
        k: k for k in modules
    }
    assert {k: factory.has_deterministic_latents(m) for k, m in modules.items()} == {
        "kl": False,
        "vq": True,
        "identity": True,
    }
    for cfg, want in ((KL, False), (VQ, True), ({"kind": "identity"}, True)):
        assert specs.has_deterministic_latents(cfg) is want
    with pytest.raises(TypeError, match="not a first stage"):
        factory.first_stage_kind_of(factory.build_unet(dict(
            image_size=8, in_channels=1, out_channels=1, model_channels=32,
            num_res_blocks=1, attention_resolutions=(),
        )))  # fmt: skip
    # Sampling and inpainting conditions see the pixels themselves.
    ae = modules["identity"]
    x = jax.random.normal(jax.random.PRNGKey(3), (1, 4, 4, 3))
    np.testing.assert_array_equal(decode_latents(ae, {}, x), x)
    np.testing.assert_array_equal(encode_images(ae, {}, x), x)


def test_schema_kind_round_trips_and_names_wrong_fields():
    spec = schema.FirstStageConfig.from_dict({"kind": "identity", "in_channels": 1})
    assert isinstance(spec, schema.IdentityConfig)
    assert spec.to_dict() == {"kind": "identity", "in_channels": 1}
    assert schema.FirstStageConfig.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert schema.FirstStageConfig.from_dict({"kind": "identity"}).in_channels == 3
    assert spec.module_kwargs() == {"channels": 1}
    module = factory.build_first_stage(spec)
    assert module == IdentityFirstStage(channels=1)
    assert schema.IdentityConfig.from_module(module) == spec
    assert writer.first_stage_spec(module) == spec.to_dict()
    with pytest.raises(ValueError, match="unknown field 'ch' for kind 'identity'.*kind 'kl'"):
        schema.FirstStageConfig.from_dict({"kind": "identity", "ch": 32})
    with pytest.raises(ValueError, match="did you mean 'in_channels'"):
        schema.FirstStageConfig.from_dict({"kind": "identity", "in_channel": 3})
    with pytest.raises(ValueError, match="did you mean 'identity'"):
        schema.FirstStageConfig.from_dict({"kind": "identiy"})
    model = dict(first_stage=spec.to_dict(), conditioning_key=None)
    assert schema.ModelConfig.from_dict(model).to_dict() == model


def test_downsampling_factor_and_latent_channels_of_every_kind():
    # f = 2 ** (levels - 1) for the autoencoders (the paper's definition), 1 for the identity.
    for levels in range(1, 6):
        cfg = dict(KL, ch_mult=(1,) * levels, embed_dim=levels)
        assert specs.downsampling_factor(cfg) == 2 ** (levels - 1)
        assert specs.latent_channels(cfg) == levels
    assert specs.downsampling_factor(VQ) == 2
    assert specs.downsampling_factor({"kind": "identity"}) == 1
    assert specs.latent_channels({"kind": "identity", "in_channels": 1}) == 1


def test_ldm1_config_is_pixel_space_everywhere():
    c = load_config_file(LDM1)
    validate_config(c)
    assert builders.first_stage_kind(c) == "identity" and c.stage == "ldm"
    assert builders.downsampling_factor(c) == 1
    assert builders.latent_shape(c) == (32, 32, 1)  # the images themselves
    assert builders.has_deterministic_latents(c)
    assert builders.condition_kind(c) == "class"
    assert builders.abstract_autoencoder_params(c) == {}
    assert factory.param_counts(c.model.to_dict())["first_stage"] == 0
    z, _, y = builders.denoiser_example_inputs(c)
    assert z.shape == (1, 32, 32, 1) and y.shape == (1,)

    tiny = load_config_file(LDM1, "tiny")
    validate_config(tiny)
    assert tiny.stage == "ldm" and tiny.data.channels == 3
    assert builders.latent_shape(tiny) == (32, 32, 3)
    assert (tiny.model.unet.in_channels, tiny.model.unet.out_channels) == (3, 3)

    emoji = load_config_file(EMOJI_LDM1)
    validate_config(emoji)
    assert emoji.data.name == "noto_emoji" and builders.latent_shape(emoji) == (32, 32, 3)
    assert builders.condition_kind(emoji) == "none" and emoji.model.unet.context_dim is None
    assert load_config_file(EMOJI_LDM1, "tiny").stage == "ldm"


def test_validation_names_f_1_and_the_identity_fields():
    c = load_config_file(LDM1)
    c.model.unet.image_size = 16
    with pytest.raises(ConfigError, match="f=1 gives latents of 32"):
        validate_config(c)
    c = load_config_file(LDM1)
    c.model.first_stage.ch = 32
    with pytest.raises(ConfigError, match="config.model.first_stage: unknown field 'ch'"):
        validate_config(c)


def test_workdir_reads_no_checkpoint_and_caches_the_pixels(tmp_path):
    c = load_config_file(LDM1)
    assert not reader.has_first_stage_params(c)
    assert reader.load_first_stage_params(str(tmp_path), c) == {}  # no checkpoints/ at all
    assert latent_cache.autoencoder_step(str(tmp_path), c) is None
    x = jax.random.uniform(jax.random.PRNGKey(4), (3, 32, 32, 1), minval=-1, maxval=1)
    mean, logvar = latent_cache.make_encode_fn(c, {})(x)
    np.testing.assert_array_equal(mean, x)
    np.testing.assert_array_equal(logvar, np.zeros_like(x))


def test_stage_one_of_an_identity_config_trains_nothing(tmp_path):
    """`stage=both` on an LDM-1 config: stage 1 returns no parameters and writes nothing."""
    from ldm_jax.trainers.autoencoder import train_autoencoder
    from ldm_jax.training.logging import MetricWriter

    config = load_config_file(str(LDM1))
    assert train_autoencoder(config, str(tmp_path), MetricWriter(str(tmp_path))) == {}
    assert not (tmp_path / "checkpoints").exists()
