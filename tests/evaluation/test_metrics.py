"""Tests for ldm_jax.evaluation.metrics."""

from __future__ import annotations

import functools
import itertools
import json
import warnings

import jax
import numpy as np
import pytest
from scipy.stats import special_ortho_group

from ldm_jax.evaluation import classifier as clf
from ldm_jax.evaluation import metrics


def _gaussian_fd(mu1, s1, mu2, s2):
    """Closed form for Gaussians whose covariances share eigenvectors (variances s1, s2)."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2.0 * np.sqrt(s1 * s2)))


@pytest.mark.parametrize("rotate", [False, True])
def test_frechet_distance_matches_gaussian_closed_form(rotate):
    rng = np.random.default_rng(0)
    d, n = 4, 200_000
    mu1, mu2 = np.array([0.0, 1.0, -1.0, 2.0]), np.array([0.5, 0.0, -1.0, 1.0])
    s1, s2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([2.0, 1.0, 1.0, 0.5])
    rot = special_ortho_group.rvs(d, random_state=1) if rotate else np.eye(d)
    a = (rng.standard_normal((n, d)) * np.sqrt(s1)) @ rot.T + mu1  # [n, d]
    b = (rng.standard_normal((n, d)) * np.sqrt(s2)) @ rot.T + mu2
    expected = _gaussian_fd(mu1, s1, mu2, s2)  # 4.43...
    np.testing.assert_allclose(metrics.frechet_distance(a, b), expected, rtol=0.02)


def test_frechet_distance_identical_and_symmetric():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((500, 16)), rng.standard_normal((400, 16)) + 0.3
    assert abs(metrics.frechet_distance(a, a)) < 1e-6
    np.testing.assert_allclose(
        metrics.frechet_distance(a, b), metrics.frechet_distance(b, a), rtol=1e-6
    )
    assert metrics.frechet_distance(a, b) > 16 * 0.3**2 * 0.5


def test_frechet_distance_singular_covariances_are_finite():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((10, 32)), rng.standard_normal((12, 32))  # N < D: rank-deficient.
    a[:, 0] = b[:, 0] = 0.0  # A dead feature, as from a ReLU unit that never fires.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fd = metrics.frechet_distance(a, b)
        assert abs(metrics.frechet_distance(a, a)) < 1e-3
    assert np.isfinite(fd) and fd > 1.0


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError):
        metrics.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


def test_mean_pairwise_distance_matches_brute_force():
    x = np.random.default_rng(3).standard_normal((7, 4, 4, 1)).astype(np.float32)
    pairs = itertools.combinations(range(len(x)), 2)
    brute = np.mean([np.linalg.norm((x[i] - x[j]).ravel()) for i, j in pairs])
    np.testing.assert_allclose(metrics.mean_pairwise_distance(x, chunk=3), brute, rtol=1e-6)
    np.testing.assert_allclose(metrics.mean_pairwise_distance(x), brute, rtol=1e-6)


def test_diversity_ratio():
    x = np.random.default_rng(4).standard_normal((20, 8, 8, 1))
    assert metrics.diversity_ratio(x, x) == pytest.approx(1.0)
    assert metrics.diversity_ratio(2.0 * x, x) == pytest.approx(2.0)
    assert metrics.diversity_ratio(np.repeat(x[:1], 20, axis=0), x) == pytest.approx(0.0, abs=1e-6)


# --- evaluate_class_samples on a synthetic 3-class problem with a hand-made classifier. ---

_TEMPLATES = np.random.default_rng(5).uniform(-1, 1, (3, 32, 32, 1)).astype(np.float32)
_PROJ = np.random.default_rng(6).standard_normal((32 * 32, 6)).astype(np.float32)


def _make_images(labels, seed):
    noise = np.random.default_rng(seed).normal(0, 0.3, (len(labels), 32, 32, 1))
    return (_TEMPLATES[labels] + noise).astype(np.float32)  # [N, 32, 32, 1]


def _nearest_template(images):
    flat = images.reshape(len(images), -1)  # [N, 1024]
    d2 = ((flat[:, None, :] - _TEMPLATES.reshape(1, 3, -1)) ** 2).sum(-1)  # [N, 3]
    return -d2, flat @ _PROJ  # logits [N, 3], features [N, 6]


@pytest.fixture(scope="module")
def reals():
    labels = np.repeat(np.arange(3), 60)
    return _make_images(labels, seed=7), labels


def test_evaluate_class_samples_on_real_like_samples(reals):
    labels = np.repeat(np.arange(3), 20)
    samples = _make_images(labels, seed=8)
    out = metrics.evaluate_class_samples(_nearest_template, samples, labels, *reals, num_classes=4)
    json.dumps(out, allow_nan=False)
    assert out["accuracy"] == 1.0 and out["real_accuracy"] == 1.0
    assert out["per_class_accuracy"] == [1.0, 1.0, 1.0, None]
    assert out["per_class_count"] == [20, 20, 20, 0]
    for r in out["per_class_diversity_ratio"][:3]:
        assert r == pytest.approx(1.0, abs=0.05)
    assert 0.2 < out["fd_ratio"] < 5.0


def test_evaluate_class_samples_detects_wrong_class_and_collapse(reals):
    labels = np.repeat(np.arange(3), 20)
    wrong = metrics.evaluate_class_samples(
        _nearest_template, _make_images((labels + 1) % 3, seed=9), labels, *reals
    )
    assert wrong["accuracy"] == 0.0
    collapsed = np.repeat(_make_images(np.arange(3), seed=10), 20, axis=0)  # one image per class
    out = metrics.evaluate_class_samples(_nearest_template, collapsed, labels, *reals)
    assert out["accuracy"] == 1.0
    assert out["mean_diversity_ratio"] == pytest.approx(0.0, abs=1e-6)
    good = metrics.evaluate_class_samples(
        _nearest_template, _make_images(labels, seed=8), labels, *reals
    )
    assert out["fd_ratio"] > 3 * good["fd_ratio"]


def test_evaluate_class_samples_seeded_and_needs_enough_reals(reals):
    labels = np.repeat(np.arange(3), 20)
    samples = _make_images(labels, seed=11)
    run = functools.partial(metrics.evaluate_class_samples, _nearest_template, samples, labels)
    assert run(*reals, seed=3) == run(*reals, seed=3)
    too_many = np.repeat(np.arange(3), 31)  # 2 x 31 > 60 reals per class.
    with pytest.raises(ValueError, match="need 62 real images"):
        metrics.evaluate_class_samples(
            _nearest_template, _make_images(too_many, 12), too_many, *reals
        )


def test_reference_sets_are_disjoint_and_class_matched():
    real_labels = np.repeat(np.arange(4), 10)
    a, b = metrics._class_matched_indices(real_labels, {0: 3, 2: 5}, 2, np.random.default_rng(0))
    assert not set(a) & set(b)
    for idx in (a, b):
        assert sorted(real_labels[idx].tolist()) == [0] * 3 + [2] * 5


def test_evaluate_class_samples_with_flax_model(reals):
    model = clf.FashionClassifier(widths=(4, 8), feature_dim=8)
    params = clf.init_params(model)
    labels = np.repeat(np.arange(3), 10)
    samples = _make_images(labels, seed=13)
    classify = metrics.make_classify_fn(model, params, batch_size=16)  # Exercises padding.
    logits, feats = classify(samples)
    assert logits.shape == (30, 10) and feats.shape == (30, 8)
    direct = model.apply({"params": params}, jax.numpy.asarray(samples))
    np.testing.assert_allclose(logits, direct, rtol=1e-5, atol=1e-5)
    out_tuple = metrics.evaluate_class_samples((model, params), samples, labels, *reals)
    out_fn = metrics.evaluate_class_samples(classify, samples, labels, *reals)
    assert out_tuple["fd"] == pytest.approx(out_fn["fd"], rel=1e-5)
    assert out_tuple["accuracy"] == out_fn["accuracy"]
