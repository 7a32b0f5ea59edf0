"""In-memory latent cache: encode a dataset once with the first stage, then train on it.

The cache keeps the posterior mean and log-variance (not a single z), so the LDM trainer
resamples z = mean + std * eps every step, as when encoding on the fly. It knows nothing of
models: it receives an `encode_fn`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import grain
import numpy as np

from ldm_jax.data import batch_indices

EncodeFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def encode_arrays(
    encode_fn: EncodeFn,
    images: np.ndarray,
    batch_size: int = 500,
) -> tuple[np.ndarray, np.ndarray]:
    """Encodes images in fixed-size batches (the last one padded, so one compilation).

    Args:
      encode_fn: images [b, H, W, C] -> (mean, logvar), each [b, h, w, c].
      images: [N, H, W, C] float32.
      batch_size: images per call.

    Returns:
      mean, logvar: float32 [N, h, w, c].
    """
    n = len(images)
    means, logvars = [], []
    for start in range(0, n, batch_size):
        chunk = images[start : start + batch_size]
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        mean, logvar = encode_fn(chunk)
        means.append(np.asarray(mean)[: batch_size - pad])
        logvars.append(np.asarray(logvar)[: batch_size - pad])
    return np.concatenate(means), np.concatenate(logvars)


def _gather(arrays: dict[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[indices] for k, v in arrays.items()}  # each [B, ...]


def make_latent_loader(
    arrays: dict[str, np.ndarray],
    *,
    batch_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
) -> grain.DatasetIterator:
    """Endless shuffled batches of the cached arrays; deterministic and resumable.

    Args:
      arrays: equal-length arrays, e.g. {"mean": [N,h,w,c], "logvar": [N,h,w,c], "label": [N]}.
      batch_size: examples per global batch (this process gets batch_size / shard_count).
      seed: shuffle seed (reshuffled every epoch).
      shard_index / shard_count: this process's rows of every global batch.

    Returns:
      A grain iterator of dicts of [B, ...] arrays, with `get_state()`/`set_state()`.
    """
    n = len(next(iter(arrays.values())))
    if any(len(v) != n for v in arrays.values()):
        raise ValueError("All cached arrays must have the same length.")
    ds = batch_indices.global_batch_indices(
        n,
        global_batch_size=batch_size,
        seed=seed,
        shard_index=shard_index,
        shard_count=shard_count,
    )  # [batch_size / shard_count]
    ds = ds.map(functools.partial(_gather, arrays))
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))
