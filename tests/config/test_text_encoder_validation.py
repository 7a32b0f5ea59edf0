"""Start-up checks of text tau_theta: the frozen MiniLM's context width and the jointly trained
BERT's vocab_size against the vocabulary it will read; the emoji text-to-image configs pass them.
"""

from __future__ import annotations

import pathlib

import ml_collections
import pytest

from ldm_jax.config.defaults import with_defaults
from ldm_jax.config.files import load_config_file
from ldm_jax.config.validation import CAPTION_VOCAB_SIZES, ConfigError, validate_config
from ldm_jax.data import datasets, pipeline
from ldm_jax.trainers.captions import build_vocab

ROOT = pathlib.Path(__file__).resolve().parents[2]
TASKS = ROOT / "configs" / "tasks" / "emoji"


def _config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    return with_defaults(load_config_file(TASKS / f"{name}.py", arg))


@pytest.mark.parametrize("name", ["text2img_bert", "text2img_minilm"])
@pytest.mark.parametrize("arg", [None, "tiny"])
def test_emoji_text2img_configs_validate(name, arg):
    config = _config(name, arg)
    validate_config(config)
    assert config.train.cond_drop_prob == 0.1  # classifier-free guidance: empty captions
    if arg is None:
        assert (config.data.name, config.data.image_size) == ("noto_emoji", 32)
        assert config.model.first_stage.kind == "kl" and len(config.model.first_stage.ch_mult) == 3


def test_frozen_minilm_needs_its_context_width():
    config = _config("text2img_minilm", "tiny")
    config.model.unet.context_dim = 32
    with pytest.raises(ConfigError, match=r"config\.model\.unet\.context_dim: is 32, .*=384"):
        validate_config(config)


def test_bert_vocab_size_must_cover_the_noto_emoji_training_vocabulary():
    config = _config("text2img_bert")
    assert config.model.cond_stage.vocab_size == CAPTION_VOCAB_SIZES["noto_emoji"] == 2310
    config.model.cond_stage.vocab_size = 2309
    with pytest.raises(ConfigError, match=r"cond_stage\.vocab_size: is 2309.*vocab_size=2310"):
        validate_config(config)
    config.data.train_split = "train[:64]"  # a smaller vocabulary, checked once it is built
    validate_config(config)


def test_bert_vocab_size_must_cover_a_given_vocabulary_file(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nred\n\nheart\n")  # ids 0..7
    config = _config("text2img_bert", "tiny")
    config.model.cond_stage.update(vocab=str(vocab), vocab_size=7)
    with pytest.raises(ConfigError, match=r"vocab_size: is 7, smaller than the vocabulary .*=8"):
        validate_config(config)
    config.model.cond_stage.vocab_size = 8
    validate_config(config)


def test_noto_emoji_training_vocabulary_has_2310_tokens(tmp_path):
    datasets.get_builder("noto_emoji/32px", str(tmp_path))  # about 4 s
    source = datasets.get_data_source("noto_emoji", "train", str(tmp_path), image_size=32)
    captions = pipeline.load_split_dict(source, 32)["caption"]
    assert len(build_vocab([str(c) for c in captions])) == CAPTION_VOCAB_SIZES["noto_emoji"]
