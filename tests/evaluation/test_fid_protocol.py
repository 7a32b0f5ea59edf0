"""The FID protocol's maths: Fréchet distance closed forms, Inception Score closed forms, the
clean-fid resize against clean-fid's own function, TF1 resizing closed forms, statistics files."""

from __future__ import annotations

import functools
import importlib.util
import pathlib

import numpy as np
import pytest

from ldm_jax.evaluation import fid_protocol, metrics


def exact_design(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """[2D, D] points whose sample mean is `mu` and whose (N - 1) sample covariance is `sigma`,
    exactly: the rows +-sqrt((N - 1) / 2) e_i have mean 0 and covariance I; then an affine map."""
    d = len(mu)
    n = 2 * d
    z = np.sqrt((n - 1) / 2) * np.concatenate([np.eye(d), -np.eye(d)])  # [2D, D]
    return mu + z @ np.linalg.cholesky(sigma).T


def closed_form_fd(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + Tr S1 + Tr S2 - 2 sum_i sqrt(lambda_i(S1 S2)), with the eigenvalues of
    S1 S2 taken from the similar symmetric matrix L1^T S2 L1 (S1 = L1 L1^T): no sqrtm."""
    l1 = np.linalg.cholesky(s1)
    lam = np.linalg.eigvalsh(l1.T @ s2 @ l1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(lam)))


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.5 * np.eye(d)


@pytest.mark.parametrize("case", ["diagonal", "scaled_identity", "general"])
def test_frechet_distance_equals_the_gaussian_closed_form(case):
    rng = np.random.default_rng({"diagonal": 0, "scaled_identity": 1, "general": 2}[case])
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    if case == "diagonal":
        s1, s2 = np.diag(rng.uniform(0.2, 3, d)), np.diag(rng.uniform(0.2, 3, d))
        expected = np.sum((mu1 - mu2) ** 2) + np.sum(
            (np.sqrt(np.diag(s1)) - np.sqrt(np.diag(s2))) ** 2
        )
    elif case == "scaled_identity":
        c, s2 = 1.7, random_spd(rng, d)
        s1 = c * np.eye(d)
        lam2 = np.linalg.eigvalsh(s2)
        expected = (
            np.sum((mu1 - mu2) ** 2) + c * d + lam2.sum() - 2 * np.sqrt(c) * np.sqrt(lam2).sum()
        )
    else:
        s1, s2 = random_spd(rng, d), random_spd(rng, d)
        expected = closed_form_fd(mu1, s1, mu2, s2)
    a, b = exact_design(mu1, s1), exact_design(mu2, s2)
    np.testing.assert_allclose(np.cov(a, rowvar=False), s1, atol=1e-12)  # the design is exact
    from_features = metrics.frechet_distance(a, b)
    from_stats = fid_protocol.frechet_distance_stats(
        fid_protocol.feature_stats(a), fid_protocol.feature_stats(b)
    )
    assert abs(from_features - expected) <= 1e-8 * max(1.0, expected)
    assert abs(from_stats - expected) <= 1e-8 * max(1.0, expected)
    assert fid_protocol.fid_from_features(a, b) == from_features
    assert fid_protocol.sfid_from_features(a, b) == from_features


def test_frechet_distance_of_large_gaussian_samples_approaches_the_closed_form():
    rng = np.random.default_rng(5)
    d, n = 3, 200_000
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.25])
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    a = rng.multivariate_normal(mu1, s1, size=n)
    b = rng.multivariate_normal(mu2, s2, size=n)
    expected = closed_form_fd(mu1, s1, mu2, s2)
    # Standard error of the estimate is about 0.01 here (the mean term dominates).
    assert abs(metrics.frechet_distance(a, b) - expected) < 0.05
    assert fid_protocol.frechet_distance_stats(
        fid_protocol.FeatureStats(mu1, s1), fid_protocol.FeatureStats(mu1, s1)
    ) == pytest.approx(0.0, abs=1e-9)


def test_stats_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    feats, spatial = rng.normal(size=(50, 8)), rng.normal(size=(50, 5))
    fid, sfid = fid_protocol.feature_stats(feats), fid_protocol.feature_stats(spatial)
    path = tmp_path / "reference_stats"  # no suffix: written exactly there
    fid_protocol.save_stats(path, fid, sfid)
    loaded_fid, loaded_sfid = fid_protocol.load_stats(path)
    np.testing.assert_array_equal(loaded_fid.mu, feats.mean(0))
    np.testing.assert_array_equal(loaded_fid.sigma, np.cov(feats, rowvar=False))
    np.testing.assert_array_equal(loaded_sfid.sigma, sfid.sigma)
    with np.load(path) as data:  # guided-diffusion's reference-batch keys
        assert sorted(data.files) == ["mu", "mu_s", "sigma", "sigma_s"]
    other = rng.normal(loc=0.3, size=(40, 8))
    assert fid_protocol.fid_from_stats(
        loaded_fid, fid_protocol.feature_stats(other)
    ) == pytest.approx(metrics.frechet_distance(feats, other), rel=1e-10)
    fid_protocol.save_stats(tmp_path / "only_fid.npz", fid)
    assert fid_protocol.load_stats(tmp_path / "only_fid.npz")[1] is None
    np.savez(tmp_path / "bad.npz", mean=feats.mean(0))
    with pytest.raises(ValueError, match="mu and sigma"):
        fid_protocol.load_stats(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="save_stats"):
        fid_protocol.load_stats(tmp_path / "absent.npz")


def one_hot_logits(labels: np.ndarray, classes: int) -> np.ndarray:
    """Logits whose float64 softmax is exactly one-hot (exp(-1e4) underflows to 0)."""
    return 1e4 * np.eye(classes)[labels]


def test_inception_score_closed_forms():
    c, splits = 7, 10
    labels = np.tile(np.arange(c), 30)  # 210 = 10 parts of 21, each with every class thrice
    mean, std = fid_protocol.inception_score(one_hot_logits(labels, c), splits=splits)
    assert mean == pytest.approx(c, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)
    same = np.tile(np.random.default_rng(0).normal(size=(1, 1008)), (40, 1))
    assert fid_protocol.inception_score(same, splits=4)[0] == pytest.approx(1.0, abs=1e-12)
    # Half one-hot on class 0, half uniform: p(y) = (e_0 + 1/C) / 2, so
    # KL(one-hot) = -log p_0, KL(uniform) = (1/C) log((1/C) / p_0) + ((C-1)/C) log 2.
    n = 20
    logits = np.concatenate([one_hot_logits(np.zeros(n, int), c), np.zeros((n, c))])
    p0 = 0.5 + 0.5 / c
    kl = 0.5 * (-np.log(p0)) + 0.5 * ((1 / c) * np.log((1 / c) / p0) + (c - 1) / c * np.log(2))
    assert fid_protocol.inception_score(logits, splits=1)[0] == pytest.approx(np.exp(kl), rel=1e-12)
    with pytest.raises(ValueError, match="splits"):
        fid_protocol.inception_score(np.zeros((3, 5)), splits=10)


@functools.lru_cache(maxsize=1)
def clean_fid_resize_module():
    """clean-fid 0.1.35's `resize.py` (numpy, PIL, torch; its package __init__ imports
    torchvision, so the one file is loaded by path)."""
    spec = importlib.util.find_spec("cleanfid")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            "clean-fid (test reference) is missing: pip install --no-deps clean-fid==0.1.35"
        )
    path = pathlib.Path(spec.submodule_search_locations[0]) / "resize.py"
    module_spec = importlib.util.spec_from_file_location("_cleanfid_resize", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("shape", [(37, 50), (512, 400), (299, 299)])
def test_clean_resize_is_clean_fids(shape):
    reference = clean_fid_resize_module().build_resizer("clean")
    rng = np.random.default_rng(shape[0])
    image = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    image[::2, ::3] = 255  # hard edges: bicubic overshoots, so the clip matters
    image[1::4] = 0
    ours = fid_protocol.clean_resize(image)
    expected = reference(image)
    assert ours.dtype == np.float32 and ours.shape == (299, 299, 3)
    np.testing.assert_array_equal(ours, expected)
    batch = fid_protocol.clean_resize(np.stack([image, image[::-1]]))
    np.testing.assert_array_equal(batch[1], reference(np.ascontiguousarray(image[::-1])))
    if shape != (299, 299):
        assert np.any(ours != np.round(ours))  # not quantised back to uint8
        assert ours.max() == 255.0 and ours.min() == 0.0  # clipped overshoot


def test_host_preprocess():
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, size=(2, 20, 30), dtype=np.uint8)
    out = fid_protocol.host_preprocess(grey, "clean")
    np.testing.assert_array_equal(
        out[1], fid_protocol.clean_resize(np.repeat(grey[1, ..., None], 3, -1))
    )
    resized = rng.uniform(0, 255, size=(1, 299, 299, 3)).astype(np.float32)
    np.testing.assert_array_equal(fid_protocol.host_preprocess(resized, "clean"), resized)
    floats = grey.astype(np.float32) + 0.3  # floats are rounded like a PNG round trip
    np.testing.assert_array_equal(fid_protocol.host_preprocess(floats, "clean"), out)
    legacy = fid_protocol.host_preprocess(grey, "legacy_pytorch")
    assert legacy.shape == (2, 20, 30, 3) and legacy.dtype == np.float32
    with pytest.raises(ValueError, match="clean, legacy_pytorch, legacy_tensorflow"):
        fid_protocol.host_preprocess(grey, "bicubic")


def test_legacy_tensorflow_resize_closed_forms():
    """TF1 bilinear without half-pixel centres samples the input at i * in / out: an exact 2x
    reduction takes every other pixel, and a linear ramp is reproduced exactly (in > out)."""
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 255, size=(1, 598, 598, 3)).astype(np.float32)
    out = np.asarray(fid_protocol.network_input(x, "legacy_tensorflow"))
    np.testing.assert_allclose(out, (x[:, ::2, ::2] - 128) / 128, atol=1e-6)
    h, w = 400, 350
    r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ramp = np.stack([0.3 * r + 0.2 * c, 0.1 * r, 0.5 * c + 3], -1)[None].astype(np.float32)
    out = np.asarray(fid_protocol.resize_bilinear_tf1(ramp))
    sr, sc = np.meshgrid(np.arange(299) * h / 299, np.arange(299) * w / 299, indexing="ij")
    expected = np.stack([0.3 * sr + 0.2 * sc, 0.1 * sr, 0.5 * sc + 3], -1)[None]
    np.testing.assert_allclose(out, expected, atol=1e-3)
