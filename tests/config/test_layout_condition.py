"""The "layout" condition kind: which configs have it, their token layout, and the start-up
checks (centre crop, a max_seq_len of 3k or 3k + 2, a dataset with boxes)."""

from __future__ import annotations

import pathlib

import pytest

from ldm_jax.config import builders
from ldm_jax.config.defaults import with_defaults
from ldm_jax.config.files import load_config_file
from ldm_jax.config.validation import ConfigError, validate_config
from ldm_jax.data.layout_tokens import LayoutVocab

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAYOUT = ROOT / "configs" / "tasks" / "fashion_mnist" / "layout2img.py"
PAPER = ROOT / "configs" / "paper" / "layout2img_openimages256.py"


def _config(path, arg=None):
    return with_defaults(load_config_file(path, arg))


def test_layout_configs_and_their_token_layout():
    config = _config(LAYOUT)
    assert builders.condition_kind(config) == "layout"
    assert builders.layout_vocab(config) == LayoutVocab(10, 4, vocab_size=1025, encode_crop=True)
    tiny = _config(LAYOUT, "tiny")
    assert builders.condition_kind(tiny) == "layout"
    assert builders.layout_vocab(tiny) == LayoutVocab(10, 4, vocab_size=512, encode_crop=False)
    validate_config(config)
    validate_config(tiny)


def test_paper_layout_model_reads_layouts_only_from_data_with_boxes():
    paper = _config(PAPER)
    assert builders.condition_kind(paper) == "text"  # open_images_v4: no boxes read (captions)
    paper.data.name = "fashion_mnist_layout"
    assert builders.condition_kind(paper) == "layout"
    # 92 tokens = 30 objects + the crop window on a 90 x 90 grid (the released model's).
    assert builders.layout_vocab(paper) == LayoutVocab(10, 30, vocab_size=8192, encode_crop=True)
    text_model = _config(PAPER)
    text_model.data.name = "fashion_mnist_layout"
    text_model.model.cond_stage.use_tokenizer = True  # a caption model on the same data
    assert builders.condition_kind(text_model) == "text"


def test_random_crop_and_bad_lengths_are_refused():
    config = _config(LAYOUT, "tiny")
    config.data.crop = "random"
    with pytest.raises(ConfigError, match=r"^config\.data\.crop: .*--config\.data\.crop=center"):
        validate_config(config)
    config = _config(LAYOUT, "tiny")
    config.model.cond_stage.max_seq_len = 13
    with pytest.raises(ConfigError, match=r"max_seq_len=13: .* 3 \* max_objects \+ 2"):
        validate_config(config)
    config = _config(LAYOUT, "tiny")
    config.model.cond_stage.vocab_size = 8  # G = 2: 4 points, padding 7 < 10 classes
    with pytest.raises(ConfigError, match=r"^config\.model\.cond_stage\.vocab_size=8: .* >= 11"):
        validate_config(config)
