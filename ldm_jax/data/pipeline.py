"""The grain training loader (deterministic, shardable, resumable) and whole-split loading.

Preprocessing (crops, resizing, channels, segmentation maps) is `data/preprocess.py`; its
functions are re-exported here. The random crop choices of global batch b, row r depend only on
(seed, b, r): the same whatever the process count, and resumed with the iterator.

Training batches are dicts of numpy arrays: image float32 [B, H, W, C], label int32 [B] (zeros if
the dataset has no "label"), and where the dataset has them caption object [B] (str) and
segmentation int32 [B, H, W] (class ids). The loader iterator's `get_state()` is a small
JSON-serialisable dict that can be stored in a checkpoint and handed back to `set_state()` to
resume on the next batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from ldm_jax.data import batch_indices
from ldm_jax.data.errors import DataError
from ldm_jax.data.preprocess import (  # noqa: F401 - re-exported: callers use pipeline.*.
    CROPS,
    PAD_VALUE,
    check_crop,
    convert_channels,
    preprocess,
    preprocess_batch,
    preprocess_examples,
    preprocess_images,
)

_EMPTY = (
    "The dataset split holds no examples: check --config.data.name, --config.data.path and the "
    "split's slice (a slice such as 'test[:0]' or 'train[99%:]' of a small split is empty)."
)


def _read(source: Sequence[dict[str, Any]], indices: Sequence[int]) -> list[dict[str, Any]]:
    """Reads examples, through the source's batched `__getitems__` when it has one (4x faster)."""
    getitems = getattr(source, "__getitems__", None)
    indices = [int(i) for i in indices]
    return list(getitems(indices)) if getitems else [source[i] for i in indices]


def _example_rngs(seed: int, batch: int, rows: range) -> list[np.random.Generator]:
    return [np.random.default_rng([seed, batch, r]) for r in rows]


def _read_and_preprocess_batch(
    source: Sequence[dict[str, Any]],
    indices: np.ndarray,
    *,
    image_size: int,
    channels: int | None,
) -> dict[str, np.ndarray]:
    return preprocess_batch(_read(source, indices), image_size, channels=channels)


def _read_and_random_crop(
    source: Sequence[dict[str, Any]],
    batch: int,
    indices: np.ndarray,
    *,
    image_size: int,
    channels: int | None,
    seed: int,
    first_row: int,
) -> dict[str, np.ndarray]:
    rngs = _example_rngs(seed, batch, range(first_row, first_row + len(indices)))
    return preprocess_batch(
        _read(source, indices), image_size, channels=channels, crop="random", rngs=rngs
    )


def make_train_dataset(
    source: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    image_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    channels: int | None = None,
    crop: str = "center",
) -> grain.MapDataset:
    """Infinite grain `MapDataset` of preprocessed batches (random access by batch index).

    The examples are shuffled with `seed` and reshuffled every epoch (grain folds the epoch
    number into the seed); batches may straddle epochs. `batch_size` is the global batch: each
    of `shard_count` processes reads only its `batch_size / shard_count` rows of it (see
    `data/batch_indices.py`), so the global batches do not depend on the process count. The
    pipeline shuffles and batches example *indices*, then reads each batch with one batched read.
    `channels` and `crop` are those of `preprocess_batch` (random crops seeded by `seed`).
    """
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}.")
    check_crop(crop)
    indices = batch_indices.global_batch_indices(
        len(source),
        global_batch_size=batch_size,
        seed=seed,
        shard_index=shard_index,
        shard_count=shard_count,
    )  # [batch_size / shard_count]
    # Partials of module-level functions (not lambdas) keep the pipeline picklable for grain
    # multiprocessing workers.
    if crop == "center":
        return indices.map(
            functools.partial(
                _read_and_preprocess_batch, source, image_size=image_size, channels=channels
            )
        )
    first_row = shard_index * (batch_size // shard_count)
    return indices.map_with_index(
        functools.partial(
            _read_and_random_crop,
            source,
            image_size=image_size,
            channels=channels,
            seed=seed,
            first_row=first_row,
        )
    )


def make_train_loader(
    source: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    image_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    num_threads: int = 0,
    prefetch: int = 2,
    channels: int | None = None,
    crop: str = "center",
) -> grain.DatasetIterator:
    """Endless iterator of training batches; deterministic given `seed`, resumable.

    Args:
      source: random-access examples (e.g. `datasets.get_data_source(...)`).
      batch_size: examples per global batch (this process gets batch_size / shard_count).
      image_size: output side length (28 -> 32 pads 2 px of -1 on each side).
      seed: shuffle seed (0 <= seed < 2**32), also seeding random crops.
      shard_index: this process's shard (e.g. `jax.process_index()`).
      shard_count: number of shards (e.g. `jax.process_count()`).
      num_threads: background threads preparing batches (0: prepared on `next()` in the caller's
        thread; 1 overlaps loading with a training step that releases the GIL).
      prefetch: batches read ahead when `num_threads > 0`.
      channels: output channels (None: as stored).
      crop: "center" or "random" (random square + horizontal flip; see module doc).

    Returns:
      A `grain.DatasetIterator` yielding {"image": float32 [B, H, W, C], "label": int32 [B]} plus
      "caption" object [B] and "segmentation" int32 [B, H, W] when the dataset has them;
      `get_state()` returns a JSON-serialisable dict for `set_state()`.
    """
    ds = make_train_dataset(
        source,
        batch_size=batch_size,
        image_size=image_size,
        seed=seed,
        shard_index=shard_index,
        shard_count=shard_count,
        channels=channels,
        crop=crop,
    )
    options = grain.ReadOptions(
        num_threads=num_threads, prefetch_buffer_size=prefetch if num_threads else 0
    )
    return iter(ds.to_iter_dataset(options))


def load_split_arrays(
    source: Sequence[dict[str, Any]],
    image_size: int,
    *,
    max_examples: int | None = None,
    chunk_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Loads a whole source, in order, preprocessed into memory (for evaluation / latent caching).

    Args:
      source: random-access examples, e.g. `get_data_source("fashion_mnist", "test")`.
      image_size: output side length.
      max_examples: keep only the first `max_examples` examples.
      chunk_size: examples read per call (bounds peak uint8 memory).

    Returns:
      images float32 [N, image_size, image_size, C] in [-1, 1]; labels int32 [N] (None if the
      dataset has no labels).
    """
    n = len(source) if max_examples is None else min(len(source), max_examples)
    if n == 0:
        raise DataError(_EMPTY)
    images = labels = None
    for start in range(0, n, chunk_size):
        chunk = preprocess_examples(
            _read(source, range(start, min(n, start + chunk_size))), image_size
        )
        if images is None:  # Preallocate: concatenating chunks doubles peak memory.
            images = np.empty((n, *chunk["image"].shape[1:]), np.float32)  # [N, H, W, C]
            labels = np.empty((n,), np.int32) if "label" in chunk else None  # [N]
        images[start : start + len(chunk["image"])] = chunk["image"]
        if labels is not None:
            labels[start : start + len(chunk["label"])] = chunk["label"]
    return images, labels


def load_split_dict(
    source: Sequence[dict[str, Any]],
    image_size: int,
    channels: int | None = None,
    crop: str = "center",
    *,
    seed: int = 0,
    max_examples: int | None = None,
    chunk_size: int = 4096,
) -> dict[str, np.ndarray]:
    """Loads a whole source, in order, preprocessed into memory, with every key it has.

    Args:
      source: random-access examples, e.g. `get_data_source("synthetic_shapes", "test")`.
      image_size: output side length.
      channels: output channels (None: as stored).
      crop: "center" (default) or "random" (example i's crop seeded by (seed, 0, i)).
      seed: seed of the random crops.
      max_examples: keep only the first `max_examples` examples.
      chunk_size: examples read per call (bounds peak uint8 memory).

    Returns:
      {"image": float32 [N, S, S, C] in [-1, 1], "label": int32 [N] (zeros if none), and when
      present "caption": object [N] of str, "segmentation": int32 [N, S, S]}.
    """
    n = len(source) if max_examples is None else min(len(source), max_examples)
    if n == 0:
        raise DataError(_EMPTY)
    out: dict[str, np.ndarray] = {}
    for start in range(0, n, chunk_size):
        rows = range(start, min(n, start + chunk_size))
        rngs = _example_rngs(seed, 0, rows) if check_crop(crop) == "random" else None
        chunk = preprocess_batch(
            _read(source, rows), image_size, channels=channels, crop=crop, rngs=rngs
        )
        for key, value in chunk.items():
            if key not in out:  # Preallocate: concatenating chunks doubles peak memory.
                out[key] = np.empty((n, *value.shape[1:]), value.dtype)
            out[key][start : start + len(value)] = value
    return out
