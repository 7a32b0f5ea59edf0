"""Improved precision/recall against a float64 brute-force reference and closed-form cases."""

from __future__ import annotations

import numpy as np
import pytest

from ldm_jax.evaluation import precision_recall as pr


def _brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """The paper's definition, with full float64 distance matrices and sorting."""

    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))  # [A, B]

    real, fake = real.astype(np.float64), fake.astype(np.float64)
    r_real = np.sort(dist(real, real), axis=1)[:, k]  # [N] (column 0 is the point itself)
    r_fake = np.sort(dist(fake, fake), axis=1)[:, k]  # [M]
    precision = np.mean((dist(fake, real) <= r_real[None, :]).any(axis=1))
    recall = np.mean((dist(real, fake) <= r_fake[None, :]).any(axis=1))
    return float(precision), float(recall)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_matches_brute_force_with_small_blocks(k):
    rng = np.random.default_rng(k)
    real = rng.standard_normal((70, 6)).astype(np.float32)
    fake = (rng.standard_normal((50, 6)) * 1.3 + 0.4).astype(np.float32)
    want_p, want_r = _brute_force(real, fake, k)
    # 7 rows per block against 70 points: blocks and a padded last block are exercised.
    got = pr.precision_recall(real, fake, k=k, block_elements=7 * 70)
    assert 0.0 < want_p < 1.0 and 0.0 < want_r < 1.0  # a case where both can be wrong
    assert got["precision"] == pytest.approx(want_p, abs=1e-12)
    assert got["recall"] == pytest.approx(want_r, abs=1e-12)
    assert (got["k"], got["num_real"], got["num_fake"]) == (k, 70, 50)


def test_radii_match_sorted_distances():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    d = np.sqrt(((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1))
    np.testing.assert_allclose(
        pr.knn_radii(x, 3, block_elements=40 * 9), np.sort(d, 1)[:, 3], rtol=1e-5
    )


def test_identical_sets_give_one_and_one():
    x = np.random.default_rng(1).standard_normal((60, 8)).astype(np.float32)
    got = pr.precision_recall(x, x.copy())
    assert got["precision"] == 1.0 and got["recall"] == 1.0


def test_far_apart_sets_give_zero_and_zero():
    rng = np.random.default_rng(2)
    real = rng.standard_normal((50, 4)).astype(np.float32)
    fake = rng.standard_normal((40, 4)).astype(np.float32) + 100.0
    got = pr.precision_recall(real, fake)
    assert got["precision"] == 0.0 and got["recall"] == 0.0


def test_a_set_inside_the_other_manifold_has_precision_one_and_low_recall():
    rng = np.random.default_rng(3)
    real = rng.uniform(-1, 1, (400, 2)).astype(np.float32)  # the square [-1, 1]^2
    # Generated points: a subset of the real points nudged by far less than any radius, so all
    # lie in the real manifold, but they cover only the corner x, y < -0.5 of it.
    corner = real[(real[:, 0] < -0.5) & (real[:, 1] < -0.5)]
    fake = corner + 1e-4
    got = pr.precision_recall(real, fake)
    assert got["precision"] == 1.0
    want_p, want_r = _brute_force(real, fake, 3)
    assert want_p == 1.0 and got["recall"] == pytest.approx(want_r, abs=1e-12)
    assert got["recall"] < 0.3  # the corner is 1/16 of the square


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\[N, D\] and \[M, D\]"):
        pr.precision_recall(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="N > k = 3"):
        pr.knn_radii(np.zeros((3, 2)))
