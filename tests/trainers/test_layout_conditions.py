"""Layout conditions of stage 2: the host token ids are `layout_tokens.encode` of the split's
boxes, the null condition is the empty layout, and dropout replaces whole rows by it."""

from __future__ import annotations

import pathlib

import jax
import numpy as np

from ldm_jax.config import builders
from ldm_jax.config.defaults import with_defaults
from ldm_jax.config.files import load_config_file
from ldm_jax.data import layout_tokens
from ldm_jax.trainers import captions, conditions, latents

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAYOUT = ROOT / "configs" / "tasks" / "fashion_mnist" / "layout2img.py"


def _config():
    config = with_defaults(load_config_file(LAYOUT, "tiny"))
    config.data.train_split = "train[:12]"
    return config


def test_host_tokens_are_the_encoded_layouts(tmp_path):
    config = _config()
    assert conditions.HOST_KEYS["layout"] == ("tokens",)
    split = latents.load_train_split(config)
    tokens = captions.caption_arrays(config, split, str(tmp_path), "tokens")  # [N, L]
    vocab = builders.layout_vocab(config)
    expected = layout_tokens.encode(split["classes"], split["boxes"], split["num_objects"], vocab)
    assert tokens.dtype == np.int32 and tokens.shape == (12, 12)
    np.testing.assert_array_equal(tokens, expected)
    # Independent check of one object: class, then corners on the G x G grid (G = 22).
    g, (x0, y0, x1, y1) = vocab.grid, split["boxes"][0, 0]
    corner = lambda x, y: round(y * (g - 1)) * g + round(x * (g - 1))  # noqa: E731
    assert tokens[0, :3].tolist() == [split["classes"][0, 0], corner(x0, y0), corner(x1, y1)]
    assert not (tmp_path / "vocab.txt").exists()  # no WordPiece vocabulary for layouts


def test_null_is_the_empty_layout_and_rows_drop_to_it():
    config = _config()
    config.train.cond_drop_prob = 0.5
    conds = conditions.make_conditions(config)
    vocab = builders.layout_vocab(config)
    assert conds.kind == "layout" and conds.keys == ("tokens",)
    np.testing.assert_array_equal(conds.null, np.full((1, 12), vocab.none, np.int32))
    crop = builders.layout_vocab(with_defaults(load_config_file(LAYOUT)))  # 14 tokens, crop
    null = builders.null_layout(crop)
    assert (null[0, :12] == crop.none).all() and null[0, 12:].tolist() == [0, crop.grid**2 - 1]
    tokens = np.arange(64 * 12, dtype=np.int32).reshape(64, 12) % 500
    y, concat = jax.jit(conds.train)({"tokens": tokens}, jax.random.PRNGKey(0))
    y = np.asarray(y)
    kept = (y == tokens).all(1)
    dropped = (y == vocab.none).all(1)
    assert concat is None and (kept | dropped).all() and 10 < dropped.sum() < 54
