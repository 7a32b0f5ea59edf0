"""Improved precision and recall of a generative model (Kynkaanniemi et al., NeurIPS 2019).

Each feature set approximates its manifold by the union of balls around its points, each ball's
radius the distance to the point's k-th nearest neighbour in the same set (the point itself
excluded). Precision is the fraction of generated points inside the real manifold, recall the
fraction of real points inside the generated manifold:

  precision = mean_j [ exists i: ||g_j - r_i|| <= radius_k(r_i) ]
  recall    = mean_i [ exists j: ||r_i - g_j|| <= radius_k(g_j) ]

Distances are float32, computed in blocks of rows against a whole set (`block_elements` bounds
each block's [rows, M] matrix), so a 50k x 50k distance matrix never exists at once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_K = 3
BLOCK_ELEMENTS = 1 << 25  # float32 entries per distance block (128 MiB)


@jax.jit
def _squared_distances(rows: jax.Array, points: jax.Array) -> jax.Array:
    """[r, D], [M, D] -> [r, M] float32 squared Euclidean distances, clipped at 0."""
    rows, points = rows.astype(jnp.float32), points.astype(jnp.float32)
    cross = jnp.dot(rows, points.T, precision=jax.lax.Precision.HIGHEST)  # [r, M]
    sq_r = jnp.sum(rows * rows, axis=1)  # [r]
    sq_p = jnp.sum(points * points, axis=1)  # [M]
    return jnp.maximum(sq_r[:, None] + sq_p[None, :] - 2.0 * cross, 0.0)


@functools.partial(jax.jit, static_argnames="k")
def _kth_neighbour_block(rows: jax.Array, points: jax.Array, k: int) -> jax.Array:
    """[r] squared distance from each row to its (k + 1)-th nearest point (itself the first)."""
    d2 = _squared_distances(rows, points)  # [r, M]
    return -jax.lax.top_k(-d2, k + 1)[0][:, k]


@jax.jit
def _covered_block(rows: jax.Array, points: jax.Array, radii2: jax.Array) -> jax.Array:
    """[r] bool: whether each row lies in some ball (points [M, D], squared radii [M])."""
    return jnp.any(_squared_distances(rows, points) <= radii2[None, :], axis=1)


def _block_rows(num_points: int, block_elements: int) -> int:
    return max(1, min(num_points, block_elements // max(num_points, 1)))


def _map_rows(fn, rows: np.ndarray, block: int) -> np.ndarray:
    """fn over row blocks of `rows` [N, D], each padded to `block` rows (one compilation)."""
    out = []
    for start in range(0, len(rows), block):
        chunk = rows[start : start + block]
        padded = np.concatenate([chunk, np.zeros((block - len(chunk), rows.shape[1]), rows.dtype)])
        out.append(np.asarray(fn(padded))[: len(chunk)])
    return np.concatenate(out)


def knn_radii(
    features: np.ndarray, k: int = DEFAULT_K, block_elements: int = BLOCK_ELEMENTS
) -> np.ndarray:
    """Distance from each point to its k-th nearest other point of the same set.

    Args:
      features: [N, D], N > k.
      k: the neighbour rank.
      block_elements: distance entries per block (bounds memory).

    Returns:
      float32 [N].
    """
    x = np.asarray(features, np.float32)
    if x.ndim != 2 or len(x) <= k:
        raise ValueError(f"Need [N, D] features with N > k = {k}, got shape {x.shape}.")
    points = jnp.asarray(x)
    block = _block_rows(len(x), block_elements)
    d2 = _map_rows(lambda r: _kth_neighbour_block(r, points, k), x, block)
    return np.sqrt(d2).astype(np.float32)


def coverage(
    queries: np.ndarray,
    points: np.ndarray,
    radii: np.ndarray,
    block_elements: int = BLOCK_ELEMENTS,
) -> float:
    """Fraction of `queries` [Q, D] inside the union of balls (`points` [M, D], `radii` [M])."""
    q = np.asarray(queries, np.float32)
    p = jnp.asarray(np.asarray(points, np.float32))
    r2 = jnp.asarray(np.square(np.asarray(radii, np.float32)))
    block = _block_rows(len(points), block_elements)
    inside = _map_rows(lambda r: _covered_block(r, p, r2), q, block)
    return float(np.mean(inside))


def precision_recall(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    k: int = DEFAULT_K,
    block_elements: int = BLOCK_ELEMENTS,
) -> dict[str, float | int]:
    """Improved precision and recall (see the module docstring).

    Args:
      real_features: [N, D] features of real images.
      fake_features: [M, D] features of generated images, in the same space.
      k: neighbour rank of the manifold radii (the paper's default 3).
      block_elements: distance entries per block (bounds memory).

    Returns:
      {"precision", "recall", "k", "num_real", "num_fake"}.
    """
    real = np.asarray(real_features, np.float32)
    fake = np.asarray(fake_features, np.float32)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"Expected [N, D] and [M, D] features, got {real.shape}, {fake.shape}.")
    real_radii = knn_radii(real, k, block_elements)
    fake_radii = knn_radii(fake, k, block_elements)
    return {
        "precision": coverage(fake, real, real_radii, block_elements),
        "recall": coverage(real, fake, fake_radii, block_elements),
        "k": int(k),
        "num_real": int(len(real)),
        "num_fake": int(len(fake)),
    }
