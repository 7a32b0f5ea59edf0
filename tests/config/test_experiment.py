"""experiment.finalize: paper/SD model configs completed into experiments; the tiny variants."""

from __future__ import annotations

import os

import pytest

from ldm_jax.config import builders, defaults, experiment
from ldm_jax.config.files import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(name, arg=None):
    return load_config_file(os.path.join(ROOT, "configs", name), arg)


def _names():
    for folder in ("paper", "sd"):
        for name in sorted(os.listdir(os.path.join(ROOT, "configs", folder))):
            if name.endswith(".py"):
                yield f"{folder}/{name}"


def test_finalize_fills_every_section_with_the_quickstart_training_defaults():
    c = _config("paper/cin256_v2.py")
    assert c.stage == "ldm" and c.seed == 0
    assert _config("paper/vq_f4.py").stage == "autoencoder"
    quickstart = _config("quickstart.py")
    for field in ("steps", "batch_size", "learning_rate", "kl_weight", "l2_weight"):
        assert c.autoencoder_train[field] == quickstart.autoencoder_train[field]
    for field, value in quickstart.train.items():
        assert c.train[field] == value, field
    assert (
        c.train.first_stage_workdir == ""
        and c.train.cond_drop_prob == defaults.TRAIN["cond_drop_prob"]
    )
    assert c.sample.to_dict() == quickstart.sample.to_dict()
    assert c.data.name == "imagenet2012" and c.data.num_classes == 1000
    assert c.data.crop == "center" and c.data.train_split == "train"
    assert c.mesh.data == -1


def test_tiny_keeps_the_conditioning_and_first_stage_kinds():
    for name in _names():
        full, tiny = _config(name), _config(name, "tiny")
        assert tiny.data.name == "synthetic_shapes" and tiny.data.image_size == 32, name
        assert tiny.model.first_stage.kind == full.model.first_stage.kind, name
        f_full = builders.downsampling_factor(full)
        assert builders.downsampling_factor(tiny) == min(f_full, 8), name
        if full.model.get("unet") is None:
            assert tiny.stage == "autoencoder"
            continue
        assert tiny.stage == "both" and tiny.train.steps == 3
        assert builders.condition_kind(tiny) == builders.condition_kind(_tiny_text_fixed(full)), (
            name
        )
        unet = tiny.model.unet
        assert unet.image_size == 32 // builders.downsampling_factor(tiny)
        # The U-Net's input channels are z plus what the condition concatenates.
        assert unet.in_channels - tiny.model.first_stage.embed_dim == {
            "superres": 3,
            "inpaint": tiny.model.first_stage.embed_dim + 1,
            "hybrid_inpaint": tiny.model.first_stage.embed_dim + 1,
            "semantic": 3,
        }.get(builders.condition_kind(tiny), 0), name


def _tiny_text_fixed(c):
    c.train.fixed_text_context = True
    return c


def test_sd_tiny_trains_on_fixed_context_and_full_sd_does_not():
    tiny = _config("sd/sd_v2_base.py", "tiny")
    assert tiny.train.fixed_text_context and builders.condition_kind(tiny) == "context"
    assert not _config("sd/sd_v2_base.py").train.fixed_text_context


def test_unknown_argument_is_refused():
    with pytest.raises(ValueError, match="'huge'"):
        experiment.finalize(_config("paper/cin256_v2.py"), "huge")


def test_tiny_keeps_the_frozen_minilm_context_width():
    """MiniLM's 384-wide context cannot shrink with the tiny U-Net (the validation demands it)."""
    c = _config("paper/text2img256.py")
    c.model.cond_stage = dict(kind="frozen_minilm", max_length=16)
    c.model.unet.context_dim = 384
    experiment._make_tiny(c)
    assert c.model.unet.context_dim == 384 and builders.condition_kind(c) == "context"
