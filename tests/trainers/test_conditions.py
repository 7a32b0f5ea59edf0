"""Stage-2 condition batches: dropout targets, masks, the SD stand-in context, the vocabulary."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.config.files import load_config_file
from ldm_jax.data import masks
from ldm_jax.models.tokenizer import WordPieceTokenizer
from ldm_jax.sampling.generate import fixed_text_context
from ldm_jax.trainers import captions, conditions

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny(name):
    return load_config_file(os.path.join(ROOT, "configs", name), "tiny")


def test_large_masks_are_binary_large_and_follow_the_key():
    m = np.asarray(jax.jit(lambda k: masks.large_masks(k, 16, 32))(jax.random.PRNGKey(0)))
    assert m.shape == (16, 32, 32, 1) and set(np.unique(m)) <= {0.0, 1.0}
    coverage = m.mean(axis=(1, 2, 3))
    assert 0.1 < coverage.mean() < 0.9 and coverage.min() > 0.0
    again = masks.large_masks(jax.random.PRNGKey(0), 16, 32)
    np.testing.assert_array_equal(m, np.asarray(again))
    assert not np.array_equal(m, np.asarray(masks.large_masks(jax.random.PRNGKey(1), 16, 32)))


def test_text_dropout_replaces_whole_rows_by_the_empty_caption():
    config = _tiny("paper/txt2img_1p4b.py")
    vocab = captions.build_vocab(["a red circle", "a blue square"])
    tokenizer = WordPieceTokenizer({t: i for i, t in enumerate(vocab)}, max_length=16)
    tokens = tokenizer(["a red circle"] * 64 + ["a blue square"] * 64)  # [128, 16]
    for p, dropped in ((0.0, 0), (1.0, 128)):
        config.train.cond_drop_prob = p
        cond = conditions.make_conditions(config, tokenizer=tokenizer)
        y, concat = cond.train({"tokens": jnp.asarray(tokens)}, jax.random.PRNGKey(0))
        empty = np.all(np.asarray(y) == tokenizer([""]), axis=1)
        assert concat is None and empty.sum() == dropped
    config.train.cond_drop_prob = 0.5
    cond = conditions.make_conditions(config, tokenizer=tokenizer)
    y = np.asarray(cond.train({"tokens": jnp.asarray(tokens)}, jax.random.PRNGKey(0))[0])
    kept = np.all(y == tokens, axis=1)
    empty = np.all(y == tokenizer([""]), axis=1)
    assert np.all(kept | empty) and 30 < empty.sum() < 98


def test_class_dropout_uses_the_null_class_and_adm_never_drops():
    config = _tiny("paper/cin256_v2.py")
    config.train.cond_drop_prob = 1.0
    cond = conditions.make_conditions(config)
    labels = jnp.arange(8, dtype=jnp.int32) % 4
    y, _ = cond.train({"label": labels}, jax.random.PRNGKey(0))
    assert np.all(np.asarray(y) == 4) and int(cond.null[0]) == 4  # 4 classes + null
    config.model.conditioning_key = "adm"
    config.model.unet.num_classes = 4
    config.model.unet.context_dim = None
    y, _ = conditions.make_conditions(config).train({"label": labels}, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(labels))


def test_fixed_context_is_per_caption_and_deterministic():
    a = fixed_text_context(["a red circle", "", "a red circle"], 77, 8)
    assert a.shape == (3, 77, 8) and a.dtype == np.float32
    np.testing.assert_array_equal(a[0], a[2])
    assert not np.allclose(a[0], a[1])
    np.testing.assert_array_equal(fixed_text_context([""], 77, 8)[0], a[1])
    assert abs(float(a.std()) - 1 / np.sqrt(8)) < 0.05


def test_superres_condition_is_the_image_downsampled_by_f():
    config = _tiny("paper/bsr_sr.py")
    cond = conditions.make_conditions(config)
    image = jnp.ones((2, 32, 32, 3)) * jnp.linspace(-1, 1, 3)
    y, _ = cond.train({"image": image}, jax.random.PRNGKey(0))
    assert y.shape == (2, 8, 8, 3)  # f = 4
    np.testing.assert_allclose(np.asarray(y), np.asarray(image[:, :8, :8]), atol=1e-5)
