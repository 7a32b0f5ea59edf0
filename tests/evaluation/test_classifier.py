"""Tests for ldm_jax.evaluation.classifier."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.data import fashion_mnist_idx
from ldm_jax.evaluation import classifier as clf

TinyClassifier = functools.partial(clf.FashionClassifier, widths=(8, 16), feature_dim=32)


def test_preprocess_fashion_mnist():
    images = np.zeros((2, 28, 28), np.uint8)
    images[0, 0, 0], images[1, 27, 27] = 255, 128
    x = clf.preprocess_fashion_mnist(images)
    assert x.shape == (2, 32, 32, 1) and x.dtype == np.float32
    assert x[0, 2, 2, 0] == 1.0 and x[0, 0, 0, 0] == -1.0 and x[0, 3, 3, 0] == -1.0
    assert x[1, 29, 29, 0] == pytest.approx(128 / 127.5 - 1.0, abs=1e-6)
    assert (x[:, :2] == -1).all() and (x[:, :, 30:] == -1).all()
    with pytest.raises(ValueError, match="uint8"):
        clf.preprocess_fashion_mnist(images.astype(np.float32))


def test_model_shapes_and_features():
    model = clf.FashionClassifier()
    shapes = jax.eval_shape(lambda: clf.init_params(model))
    n_params = sum(np.prod(s.shape) for s in jax.tree.leaves(shapes))
    assert n_params == (9 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 128 + 128) + (
        2048 * 128 + 128
    ) + (128 * 10 + 10)
    tiny = TinyClassifier()
    params = clf.init_params(tiny)
    x = jax.random.uniform(jax.random.key(0), (3, 32, 32, 1), minval=-1, maxval=1)
    logits, feats = tiny.apply({"params": params}, x, return_features=True)
    assert logits.shape == (3, 10) and feats.shape == (3, 32) and logits.dtype == jnp.float32
    np.testing.assert_array_equal(logits, tiny.apply({"params": params}, x))


def test_augment():
    x = jax.random.uniform(jax.random.key(1), (16, 32, 32, 1))
    key = jax.random.key(2)
    np.testing.assert_array_equal(clf._augment(key, x, flip=False, max_shift=0), x)
    flipped = clf._augment(key, x, flip=True, max_shift=0)
    same = [(flipped[i] == x[i]).all() for i in range(16)]
    mirrored = [(flipped[i] == x[i, :, ::-1]).all() for i in range(16)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 0 < sum(mirrored) < 16
    shifted = clf._augment(key, x, flip=False, max_shift=2)
    assert shifted.shape == x.shape and float(shifted.min()) == -1.0  # Border filled with -1.


def test_tiny_training_learns():
    images, labels = fashion_mnist_idx.read_idx_arrays("test")
    images, labels = images[:3000], labels[:3000]
    x = clf.preprocess_fashion_mnist(images)
    train_x, train_y, test_x, test_y = x[:2500], labels[:2500], x[2500:], labels[2500:]
    model = TinyClassifier()

    def loss(p):
        return float(clf.cross_entropy(model.apply({"params": p}, train_x), train_y).mean())

    params, acc = clf.train_classifier(
        train_x, train_y, test_x, test_y, num_steps=150, batch_size=64, model=model, seed=0
    )
    assert acc > 0.6  # Chance is 0.1.
    assert loss(params) < 0.7 * loss(clf.init_params(model, seed=0))


def test_save_load_round_trip(tmp_path):
    model = TinyClassifier()
    params = clf.init_params(model, seed=3)
    clf.save_classifier(str(tmp_path), params, {"test_accuracy": 0.5})
    loaded, meta = clf.load_classifier(str(tmp_path), model)
    assert meta == {"test_accuracy": 0.5}
    x = jax.random.uniform(jax.random.key(4), (5, 32, 32, 1), minval=-1, maxval=1)
    np.testing.assert_array_equal(
        model.apply({"params": params}, x), model.apply({"params": loaded}, x)
    )


def test_load_errors_say_how_to_train(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m ldm_jax.evaluation.classifier"):
        clf.load_classifier(str(tmp_path / "missing"))
    clf.save_classifier(str(tmp_path), clf.init_params(TinyClassifier()), {"test_accuracy": 0.5})
    with pytest.raises(ValueError, match="incompatible.*python -m ldm_jax.evaluation.classifier"):
        clf.load_classifier(str(tmp_path))  # Full-size architecture expected.
    (tmp_path / clf.PARAMS_FILE).write_bytes(b"\x00not msgpack at all")
    with pytest.raises(ValueError, match="Corrupt.*python -m ldm_jax.evaluation.classifier"):
        clf.load_classifier(str(tmp_path), TinyClassifier())


def test_get_or_train_loads_cache_without_training(tmp_path, monkeypatch):
    params = clf.init_params(clf.FashionClassifier(), seed=5)
    clf.save_classifier(str(tmp_path), params, {"test_accuracy": 0.91})

    def fail(*args, **kwargs):
        raise AssertionError("should not train")

    monkeypatch.setattr(clf, "train_classifier", fail)
    loaded, meta = clf.get_or_train_classifier(str(tmp_path))
    assert meta["test_accuracy"] == 0.91
    jax.tree.map(np.testing.assert_array_equal, params, loaded)


def test_get_or_train_trains_and_caches(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    fake = {
        s: (rng.integers(0, 256, (n, 28, 28), np.uint8), rng.integers(0, 10, n))
        for s, n in (("train", 64), ("test", 32))
    }
    monkeypatch.setattr(clf, "read_idx_arrays", lambda split: fake[split])
    params, meta = clf.get_or_train_classifier(str(tmp_path), num_steps=2, batch_size=32)
    assert 0.0 <= meta["test_accuracy"] <= 1.0
    assert meta["train_kwargs"] == {"num_steps": 2, "batch_size": 32}
    loaded, _ = clf.load_classifier(str(tmp_path))
    jax.tree.map(np.testing.assert_array_equal, params, loaded)
