"""Caption retrieval accuracy of text-to-image samples against random captions (pure arrays).

Protocol. The held-out split gives C distinct captions, each with its real image(s) (the
references). Q of them (all, or Q drawn at random with the seed) are the queries; query q has one
sample generated from its caption. For query q a candidate set of K captions is drawn: its own
caption and K - 1 other held-out captions, uniformly without replacement (seeded). The distance
of the sample to a candidate caption is its distance to the nearest of that caption's reference
images; the sample retrieves its caption when the true caption is the nearest candidate (a tie
among m nearest candidates counts 1/m). Top-1 accuracy is the mean over queries.

Chance is 1/K, exactly in expectation for any generator that ignores the caption: the queries are
the captions themselves (or a uniform draw of them) and the distractors a uniform draw of the
rest, so given a candidate set and a caption-independent sample, each of its K captions is
equally likely to be the true one. Over Q queries the accuracy of such a generator scatters by
about sqrt((1/K)(1 - 1/K) / Q) (0.025 for Q = 144, K = 10); `stderr` states the binomial error of
the measured accuracy. K = 1 gives 1 trivially.

The distance is a function of paired images (`PairDistance`): LPIPS-VGG (`lpips_pair_distance`,
the perceptual distance) or the mean squared pixel difference (`pixel_pair_distance`). Only the
pairs a candidate set needs are measured (Q x sum of the candidates' reference counts).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from ldm_jax.losses import lpips

# images a [P, H, W, C], b [P, H, W, C] float32 in [-1, 1] -> distances [P] (row i: a[i] to b[i]).
PairDistance = Callable[[np.ndarray, np.ndarray], np.ndarray]


class CaptionSet(NamedTuple):
    """The distinct captions of a split and the caption of each of its images.

    Attributes:
      captions: the C distinct captions, in order of first appearance.
      image_caption: int [N], the index into `captions` of each image's caption.
    """

    captions: list[str]
    image_caption: np.ndarray


def caption_set(captions: Sequence[str]) -> CaptionSet:
    """Groups a split's per-image captions [N] into its distinct captions."""
    index: dict[str, int] = {}
    image_caption = np.asarray([index.setdefault(str(c), len(index)) for c in captions], np.int64)
    return CaptionSet(list(index), image_caption)


def choose_queries(num_captions: int, num: int | None, seed: int) -> np.ndarray:
    """The query captions: all C in order when `num` is None or >= C, else `num` of them drawn
    uniformly without replacement (sorted), so that chance stays exactly 1/K."""
    if num is None or num >= num_captions:
        return np.arange(num_captions)
    if num <= 0:
        raise ValueError(f"num must be positive, got {num}.")
    rng = np.random.default_rng([seed, 1])
    return np.sort(rng.choice(num_captions, size=num, replace=False))


def candidate_sets(queries: np.ndarray, num_captions: int, k: int, seed: int) -> np.ndarray:
    """Candidate captions [Q, K] of each query: column 0 the query's own caption, then K - 1
    distinct other captions drawn uniformly (seeded; row q depends on the seed and q's row).

    Raises:
      ValueError: unless 1 <= k <= num_captions.
    """
    if not 1 <= k <= num_captions:
        raise ValueError(f"candidates K={k} must be in [1, {num_captions}] (the captions).")
    rng = np.random.default_rng([seed, 2])
    out = np.empty((len(queries), k), np.int64)
    for row, q in enumerate(queries):
        others = rng.choice(num_captions - 1, size=k - 1, replace=False)  # [K - 1] in [0, C - 1)
        out[row] = np.concatenate([[q], others + (others >= q)])  # skip the query's caption
    return out


def candidate_pairs(
    candidates: np.ndarray, image_caption: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (query row, reference image, candidate slot) with the image's caption at that slot.

    Args:
      candidates: int [Q, K] caption indices.
      image_caption: int [N] caption index of each reference image.

    Returns:
      rows [P], images [P], slots [P] (int), P = sum over rows of the candidates' image counts.
    """
    by_caption: dict[int, list[int]] = {}
    for image, caption in enumerate(image_caption.tolist()):
        by_caption.setdefault(caption, []).append(image)
    rows, images, slots = [], [], []
    for row, cands in enumerate(candidates.tolist()):
        for slot, caption in enumerate(cands):
            refs = by_caption.get(caption, [])
            if not refs:
                raise ValueError(f"Candidate caption {caption} has no reference image.")
            rows += [row] * len(refs)
            images += refs
            slots += [slot] * len(refs)
    return np.asarray(rows, np.int64), np.asarray(images, np.int64), np.asarray(slots, np.int64)


def retrieval_hits(candidate_distances: np.ndarray) -> np.ndarray:
    """Per-query credit [Q] from distances [Q, K] to the candidates (column 0 the true one):
    1 if column 0 is the unique minimum, 1/m if it ties with m - 1 others, else 0."""
    d = np.asarray(candidate_distances, np.float64)
    nearest = d.min(axis=1, keepdims=True)  # [Q, 1]
    at_min = d <= nearest  # [Q, K]
    return at_min[:, 0] / at_min.sum(axis=1)


def accuracy_summary(hits: np.ndarray, k: int) -> dict[str, Any]:
    """Top-1 accuracy, its binomial standard error, and chance 1/K."""
    acc = float(np.mean(hits))
    return {
        "accuracy": acc,
        "stderr": math.sqrt(max(acc * (1.0 - acc), 0.0) / len(hits)),
        "chance": 1.0 / k,
        "num_queries": int(len(hits)),
    }


def candidate_distances(
    queries: np.ndarray,
    references: np.ndarray,
    image_caption: np.ndarray,
    candidates: np.ndarray,
    distance: PairDistance,
) -> np.ndarray:
    """Distances [Q, K] of each query image to each candidate caption (its nearest reference).

    Args:
      queries: [Q, H, W, C] images; row q was made for the caption `candidates[q, 0]`.
      references: [N, H, W, C] real images of the captions.
      image_caption: int [N] caption index of each reference.
      candidates: int [Q, K] candidate captions, column 0 the true one.
      distance: the paired-image distance.
    """
    if len(queries) != len(candidates):
        raise ValueError(f"{len(queries)} query images for {len(candidates)} candidate rows.")
    rows, images, slots = candidate_pairs(candidates, image_caption)
    d = np.asarray(distance(queries[rows], references[images]), np.float64)  # [P]
    out = np.full(candidates.shape, np.inf)
    np.minimum.at(out, (rows, slots), d)
    return out


def caption_retrieval(
    queries: np.ndarray,
    references: np.ndarray,
    image_caption: np.ndarray,
    candidates: np.ndarray,
    distance: PairDistance,
) -> dict[str, Any]:
    """Caption retrieval accuracy of `queries` (see the module docstring).

    Args: as `candidate_distances`.

    Returns:
      {"accuracy", "stderr", "chance" (1/K), "num_queries"}.
    """
    dists = candidate_distances(queries, references, image_caption, candidates, distance)
    return accuracy_summary(retrieval_hits(dists), candidates.shape[1])


def pixel_pair_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared pixel difference of each pair: [P, H, W, C] x2 -> [P]."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return np.mean(diff.reshape(len(diff), -1) ** 2, axis=1)


def lpips_pair_distance(net: str = "vgg16", batch_size: int = 64) -> PairDistance:
    """LPIPS (`losses.lpips`, the learned heads on `net`) of each pair, in compiled batches of
    `batch_size` pairs (the last one padded: one compilation)."""
    params = lpips.load_lpips_params(net)
    apply = jax.jit(functools.partial(lpips.lpips_distance, net=net))

    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        out = []
        for start in range(0, len(a), batch_size):
            n = min(batch_size, len(a) - start)
            pad = ((0, batch_size - n), (0, 0), (0, 0), (0, 0))
            x0 = np.pad(a[start : start + n], pad)
            x1 = np.pad(b[start : start + n], pad)
            out.append(np.asarray(apply(params, x0, x1))[:n])
        return np.concatenate(out) if out else np.zeros((0,), np.float32)

    return distance
