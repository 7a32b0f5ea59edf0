"""The typed model schema: round trips, clear errors, and one field list for every user."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ldm_jax.config import presets, schema
from ldm_jax.interop import model_spec
from ldm_jax.models import factory
from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.models.specs import module_hyperparameters
from ldm_jax.models.unet import UNetModel
from ldm_jax.models.vq_autoencoder import VQModel

UNET = dict(
    image_size=8,
    in_channels=4,
    out_channels=4,
    model_channels=32,
    num_res_blocks=1,
    attention_resolutions=[2],
    channel_mult=[1, 2],
    num_heads=2,
)
FIRST_STAGE = dict(kind="kl", ch=32, ch_mult=[1, 2], num_res_blocks=1, z_channels=4, embed_dim=4)
VQ = dict(FIRST_STAGE, kind="vq", n_embed=64)
COND_STAGES = [
    dict(kind="none"),
    dict(kind="identity"),
    dict(kind="first_stage"),
    dict(kind="class", n_classes=11, embed_dim=32, add_null_class=True),
    dict(kind="bert", n_embed=32, n_layer=1, vocab_size=100, max_seq_len=8, vocab="vocab.txt"),
    dict(kind="spatial_rescaler", n_stages=2, in_channels=5, out_channels=3),
    presets.cond_stage("frozen_clip_vit_l14"),
    presets.cond_stage("frozen_openclip_vit_h14"),
]

# The reference `UNetModel.__init__` defaults (CompVis/stablediffusion
# ldm/modules/diffusionmodules/openaimodel.py), for the arguments the schema takes.
REFERENCE_UNET_DEFAULTS = dict(
    dropout=0,
    channel_mult=(1, 2, 4, 8),
    conv_resample=True,
    num_classes=None,
    num_heads=-1,
    num_head_channels=-1,
    num_heads_upsample=-1,
    use_scale_shift_norm=False,
    resblock_updown=False,
    use_new_attention_order=False,
    use_spatial_transformer=False,
    transformer_depth=1,
    context_dim=None,
    legacy=True,
    use_linear_in_transformer=False,
)


def _sections():
    return [
        schema.UNetConfig.from_dict(UNET),
        schema.FirstStageConfig.from_dict(FIRST_STAGE),
        schema.FirstStageConfig.from_dict(VQ),
        *[schema.CondStageConfig.from_dict(c) for c in COND_STAGES],
        schema.DiffusionConfig.from_dict(presets.diffusion("sd", loss_type="l1")),
    ]


@pytest.mark.parametrize("section", _sections(), ids=lambda s: type(s).__name__)
def test_round_trips_through_dict_and_json(section):
    families = (schema.FirstStageConfig, schema.CondStageConfig)
    base = next((b for b in families if isinstance(section, b)), type(section))
    assert base.from_dict(section.to_dict()) == section
    assert base.from_dict(json.loads(json.dumps(section.to_dict()))) == section
    with pytest.raises(dataclasses.FrozenInstanceError):
        section.KIND_TEST = 1


def test_model_config_round_trip_and_parts():
    model = dict(first_stage=VQ, unet=UNET, cond_stage=COND_STAGES[3], conditioning_key="crossattn")
    typed = schema.ModelConfig.from_dict(model)
    assert isinstance(typed.first_stage, schema.VQConfig)
    assert isinstance(typed.cond_stage, schema.ClassCondConfig)
    assert schema.ModelConfig.from_dict(typed.to_dict()) == typed
    with pytest.raises(ValueError, match="conditioning_key: 'cross'"):
        schema.ModelConfig.from_dict(dict(model, conditioning_key="cross"))
    with pytest.raises(ValueError, match="unknown field 'unets' \\(did you mean 'unet'\\?\\)"):
        schema.ModelConfig.from_dict(dict(first_stage=VQ, unets=UNET))


@pytest.mark.parametrize(
    "section, mapping, message",
    [
        (schema.UNetConfig, dict(UNET, num_head=4), "unknown field 'num_head'.*'num_heads'"),
        (schema.UNetConfig, dict(UNET, model_channels="32"), "model_channels: expected int"),
        (schema.UNetConfig, dict(UNET, num_heads=True), "num_heads: expected int"),
        (schema.UNetConfig, dict(UNET, channel_mult=2), "channel_mult: expected a list of int"),
        (schema.UNetConfig, {"image_size": 8}, "missing required field 'in_channels'"),
        (schema.FirstStageConfig, dict(FIRST_STAGE, n_embed=8), "'n_embed'.*kind 'vq'"),
        (schema.FirstStageConfig, dict(FIRST_STAGE, kind="kll"), "did you mean 'kl'"),
        (schema.FirstStageConfig, dict(FIRST_STAGE, double_z=False), "double_z=True"),
        (schema.CondStageConfig, dict(kind="class", embed_dim=4, n_class=3), "'n_classes'"),
        (schema.CondStageConfig, dict(kind="clip"), "did you mean 'frozen_clip'"),
        (schema.DiffusionConfig, dict(prediction_type="eps"), "did you mean 'epsilon'"),
        (schema.DiffusionConfig, dict(parameterization="eps"), "'parameterization'"),
    ],
)
def test_errors_name_the_field_and_the_fix(section, mapping, message):
    with pytest.raises(ValueError, match=message):
        section.from_dict(mapping)


def test_reference_parameterization_is_renamed():
    for old, new in (("eps", "epsilon"), ("x0", "sample"), ("v", "v_prediction")):
        assert (
            schema.DiffusionConfig.from_reference({"parameterization": old}).prediction_type == new
        )


def test_unet_defaults_are_the_reference_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(schema.UNetConfig)}
    assert {k: fields[k] for k in REFERENCE_UNET_DEFAULTS} == REFERENCE_UNET_DEFAULTS
    assert factory.build_unet(UNET).use_spatial_transformer is False  # reference, not module


def test_schema_fields_are_the_modules_hyperparameters():
    """The one field list: the schema holds exactly each module's hyperparameters (+ inputs)."""
    pairs = [(schema.UNetConfig, UNetModel), (schema.KLConfig, AutoencoderKL)]
    pairs.append((schema.VQConfig, VQModel))
    for section, module in pairs:
        assert set(section.module_field_names()) == set(module_hyperparameters(module))
    assert schema.UNetConfig.NOT_MODULE_FIELDS == ("image_size", "in_channels")
    for cond in COND_STAGES:
        typed = schema.CondStageConfig.from_dict(cond)
        module = factory.COND_STAGE_MODULES.get(typed.KIND)
        if module is not None:
            assert set(typed.module_kwargs()) == set(module_hyperparameters(module))


def test_factory_and_model_spec_use_the_schema_fields():
    unet = factory.build_unet(UNET)
    typed = schema.UNetConfig.from_dict(UNET)
    assert {n: getattr(unet, n) for n in typed.module_field_names()} == typed.module_kwargs()
    spec = model_spec.unet_spec(unet, 8, 4)
    assert tuple(spec) == schema.UNetConfig.field_names()
    assert schema.UNetConfig.from_dict(spec) == typed
    for mapping, cls in ((FIRST_STAGE, schema.KLConfig), (VQ, schema.VQConfig)):
        spec = model_spec.first_stage_spec(factory.build_first_stage(mapping))
        assert tuple(spec) == ("kind", *cls.field_names())
        assert schema.FirstStageConfig.from_dict(spec) == schema.FirstStageConfig.from_dict(mapping)
    for cond in COND_STAGES[3:6]:
        typed = schema.CondStageConfig.from_dict(cond)
        extra = {k: getattr(typed, k) for k in typed.NOT_MODULE_FIELDS}
        spec = model_spec.cond_stage_spec(factory.build_cond_stage(cond), **extra)
        assert tuple(spec) == ("kind", *type(typed).field_names())
        assert schema.CondStageConfig.from_dict(spec) == typed


def test_factory_drops_reference_runtime_options():
    unet = factory.build_unet(dict(UNET, use_checkpoint=True, use_fp16=False))
    assert unet == factory.build_unet(UNET)


def test_presets_are_valid_and_misspelt_names_are_refused():
    for name in presets.FIRST_STAGES:
        schema.FirstStageConfig.from_dict(presets.first_stage(name))
    for name in presets.UNETS:
        schema.UNetConfig.from_dict(presets.unet(name))
    for name in presets.DIFFUSION:
        schema.DiffusionConfig.from_dict(presets.diffusion(name))
    with pytest.raises(ValueError, match="did you mean 'kl_f8'"):
        presets.first_stage("kl-f8")
    with pytest.raises(ValueError, match="unknown field 'context_dims'"):
        presets.unet("sd_v1", context_dims=1024)
    with pytest.raises(ValueError, match="no field 'num_heads' to drop"):
        presets.unet("sd_v2", drop=("num_heads",))
    assert "num_heads" not in presets.unet("sd_v2")
    assert presets.unet("sd_v1") is not presets.UNETS["sd_v1"]
