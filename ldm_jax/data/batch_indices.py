"""Shuffled example indices per global batch, sliced per process.

Every process shuffles the same index sequence (same seed, reshuffled each epoch by grain) and
cuts the same global batches; process p keeps rows [p * b, (p + 1) * b) of each, with
b = global_batch_size / shard_count, and reads only those examples. The global batch at step s
is therefore the same whatever the number of processes, so a 2-process run sees exactly the
data of a 1-process run.
"""

from __future__ import annotations

import functools

import grain
import numpy as np

from ldm_jax.data.errors import DataError


def _slice(indices: np.ndarray, *, start: int, stop: int) -> np.ndarray:
    return indices[start:stop]


def global_batch_indices(
    num_examples: int,
    *,
    global_batch_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
) -> grain.MapDataset:
    """Infinite `MapDataset` of int index arrays [global_batch_size / shard_count].

    Raises:
      ValueError: naming the values when the batch does not split evenly.
      DataError: the dataset holds fewer examples than one global batch (names the fix).
    """
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"Invalid shard_index {shard_index} for shard_count {shard_count}.")
    if global_batch_size <= 0 or global_batch_size % shard_count:
        raise ValueError(
            f"The global batch size {global_batch_size} must be a positive multiple of the "
            f"number of processes ({shard_count})."
        )
    if num_examples < global_batch_size:
        raise DataError(
            f"The dataset holds {num_examples} examples, fewer than the batch size "
            f"{global_batch_size} (one global batch): lower the batch size "
            f"(--config.train.batch_size or --config.autoencoder_train.batch_size) to at most "
            f"{max(1, num_examples)}, or train on more data (a larger --config.data.train_split "
            "slice; an image folder's skipped files do not count)."
        )
    per_process = global_batch_size // shard_count
    batches = (
        grain.MapDataset.range(num_examples)
        .shuffle(seed=seed)
        .repeat()
        .batch(global_batch_size, drop_remainder=True)
    )  # [global_batch_size]
    if shard_count == 1:
        return batches
    start = shard_index * per_process
    return batches.map(functools.partial(_slice, start=start, stop=start + per_process))
