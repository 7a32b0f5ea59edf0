"""Caption retrieval accuracy on constructed inputs whose answer is known: perfect samples score
1, caption-independent samples score chance 1/K (even a single "hub" image shown for every
caption), K = 1 scores 1, ties split their credit; candidate sets are seeded and well formed.
"""

from __future__ import annotations

import numpy as np
import pytest

from ldm_jax.evaluation import caption_retrieval as cr
from ldm_jax.losses import lpips


def _dataset(num_captions: int, per_caption: int = 1, seed: int = 0):
    """Random 8x8 RGB references, `per_caption` of each caption, shuffled."""
    rng = np.random.default_rng(seed)
    captions = [f"caption {i}" for i in range(num_captions) for _ in range(per_caption)]
    order = rng.permutation(len(captions))
    images = rng.uniform(-1, 1, (len(captions), 8, 8, 3)).astype(np.float32)
    return [captions[i] for i in order], images


def _problem(captions, k: int, seed: int = 0, num: int | None = None):
    groups = cr.caption_set(captions)
    queries = cr.choose_queries(len(groups.captions), num, seed)
    return groups, queries, cr.candidate_sets(queries, len(groups.captions), k, seed)


def test_perfect_samples_retrieve_every_caption():
    captions, refs = _dataset(50, per_caption=2)
    groups, queries, cands = _problem(captions, k=10)
    # Each query's sample is one of its caption's references, slightly perturbed.
    first = [np.flatnonzero(groups.image_caption == q)[-1] for q in queries]
    samples = refs[first] + 0.01
    result = cr.caption_retrieval(
        samples, refs, groups.image_caption, cands, cr.pixel_pair_distance
    )
    assert result == {"accuracy": 1.0, "stderr": 0.0, "chance": 0.1, "num_queries": 50}


@pytest.mark.parametrize("kind", ["noise", "hub"])
def test_caption_independent_samples_score_chance(kind):
    k, n = 5, 600
    captions, refs = _dataset(n, seed=1)
    groups, queries, cands = _problem(captions, k=k, seed=3)
    rng = np.random.default_rng(7)
    if kind == "noise":
        samples = rng.uniform(-1, 1, (n, 8, 8, 3)).astype(np.float32)
    else:  # one image for every caption: the references nearest to it win for any query
        samples = np.repeat(refs[:1] * 0.5, n, axis=0)
    result = cr.caption_retrieval(
        samples, refs, groups.image_caption, cands, cr.pixel_pair_distance
    )
    sigma = np.sqrt(0.2 * 0.8 / n)  # 0.016
    assert abs(result["accuracy"] - 1 / k) < 3.5 * sigma, result
    assert result["chance"] == 0.2


def test_one_candidate_always_retrieves():
    captions, refs = _dataset(20)
    groups, queries, cands = _problem(captions, k=1)
    assert cands.shape == (20, 1) and (cands[:, 0] == queries).all()
    noise = np.random.default_rng(0).uniform(-1, 1, refs.shape).astype(np.float32)
    result = cr.caption_retrieval(noise, refs, groups.image_caption, cands, cr.pixel_pair_distance)
    assert result["accuracy"] == 1.0 and result["chance"] == 1.0


def test_hits_split_ties_and_reward_only_a_nearest_true_caption():
    d = np.array(
        [
            [0.1, 0.5, 0.7],  # true nearest: 1
            [0.5, 0.1, 0.7],  # a distractor nearer: 0
            [0.3, 0.3, 0.7],  # tie of two: 1/2
            [0.2, 0.2, 0.2],  # all tied: 1/3
        ]
    )
    np.testing.assert_allclose(cr.retrieval_hits(d), [1.0, 0.0, 0.5, 1 / 3])
    summary = cr.accuracy_summary(cr.retrieval_hits(d), 3)
    assert summary["accuracy"] == pytest.approx((1 + 0.5 + 1 / 3) / 4)
    assert summary["stderr"] == pytest.approx(
        np.sqrt(summary["accuracy"] * (1 - summary["accuracy"]) / 4)
    )


def test_caption_distance_is_its_nearest_reference():
    # Caption 0 has references at pixel values 0.0 and 0.9, caption 1 one at 0.5.
    refs = np.stack([np.full((2, 2, 1), v, np.float32) for v in (0.0, 0.5, 0.9)])
    image_caption = np.array([0, 1, 0])
    cands = np.array([[0, 1], [1, 0]])
    queries = np.stack([np.full((2, 2, 1), 0.8, np.float32), np.full((2, 2, 1), 0.45, np.float32)])
    d = cr.candidate_distances(queries, refs, image_caption, cands, cr.pixel_pair_distance)
    np.testing.assert_allclose(d, [[0.01, 0.09], [0.0025, 0.2025]], rtol=1e-6)


def test_candidate_sets_are_seeded_distinct_and_lead_with_the_query():
    queries = np.arange(30)
    a = cr.candidate_sets(queries, 30, 8, seed=5)
    assert (a[:, 0] == queries).all()
    assert all(len(set(row)) == 8 for row in a.tolist())
    assert a.min() >= 0 and a.max() < 30
    np.testing.assert_array_equal(a, cr.candidate_sets(queries, 30, 8, seed=5))
    assert not np.array_equal(a, cr.candidate_sets(queries, 30, 8, seed=6))
    # Distractors are uniform over the other captions: every caption appears about equally.
    many = cr.candidate_sets(np.zeros(3000, np.int64), 11, 3, seed=0)[:, 1:]
    counts = np.bincount(many.ravel(), minlength=11)
    assert counts[0] == 0 and np.all(np.abs(counts[1:] - 600) < 4 * np.sqrt(600))
    with pytest.raises(ValueError, match="K=31"):
        cr.candidate_sets(queries, 30, 31, seed=0)


def test_caption_set_and_query_subsets():
    groups = cr.caption_set(["b", "a", "b", "c"])
    assert groups.captions == ["b", "a", "c"]
    np.testing.assert_array_equal(groups.image_caption, [0, 1, 0, 2])
    np.testing.assert_array_equal(cr.choose_queries(5, None, 0), np.arange(5))
    np.testing.assert_array_equal(cr.choose_queries(5, 9, 0), np.arange(5))
    sub = cr.choose_queries(100, 10, 0)
    assert len(set(sub.tolist())) == 10 and (np.diff(sub) > 0).all() and sub.max() < 100
    assert not np.array_equal(sub, np.arange(10))  # drawn, not the first ten


def test_lpips_pair_distance_is_lpips_of_each_pair():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (5, 32, 32, 3)).astype(np.float32)
    b = np.concatenate([a[:2], rng.uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)])
    got = cr.lpips_pair_distance("vgg16", batch_size=4)(a, b)  # two batches, the last padded
    want = np.asarray(lpips.lpips_distance(lpips.load_lpips_params("vgg16"), a, b))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert got.shape == (5,) and np.all(got[:2] < 1e-6) and np.all(got[2:] > 0.1)
