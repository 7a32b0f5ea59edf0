"""Preprocessing and the grain training loader (deterministic, shardable, resumable).

Images go from uint8 [h, w, c] to float32 [H, W, C] in [-1, 1] (NHWC). Non-square images are
centre-cropped to a square; smaller squares are padded centrally with -1 (black), larger ones are
downscaled with Pillow (bicubic, antialiased).

Training batches are dicts of numpy arrays: image float32 [B, H, W, C], label int32 [B] (absent if
the dataset has no "label"). The loader iterator's `get_state()` is a small JSON-serialisable dict
that can be stored in a checkpoint and handed back to `set_state()` to resume on the next batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
from PIL import Image

from ldm_jax.data import batch_indices

PAD_VALUE = -1.0  # Black in [-1, 1].


def _to_nhwc_uint8(images: np.ndarray) -> np.ndarray:
    """Adds a channel axis to [..., h, w] grey images if missing."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"Expected uint8 images, got {images.dtype}.")
    return images[..., None] if images.ndim == 2 else images


def _resize(square: np.ndarray, size: int) -> np.ndarray:
    """Downscales a uint8 [s, s, C] image to [size, size, C], each channel with Pillow."""
    channels = [
        np.asarray(Image.fromarray(square[..., c]).resize((size, size), Image.Resampling.BICUBIC))
        for c in range(square.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def preprocess_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 [B, h, w, C] -> float32 [B, image_size, image_size, C] in [-1, 1] (see module doc)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"Expected uint8 [B, h, w, C] images, got {images.dtype} {images.shape}.")
    _, h, w, _ = images.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    images = images[:, top : top + s, left : left + s]  # [B, s, s, C]
    if s > image_size:
        images = np.stack([_resize(im, image_size) for im in images])
    x = images.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0)  # [B, s', s', C]
    if s < image_size:
        before = (image_size - s) // 2
        after = image_size - s - before
        x = np.pad(x, ((0, 0), (before, after), (before, after), (0, 0)), constant_values=PAD_VALUE)
    return x  # [B, image_size, image_size, C]


def preprocess(example: dict[str, Any], image_size: int) -> dict[str, np.ndarray]:
    """Turns one example into model inputs.

    Args:
      example: {"image": uint8 [h, w, C] (or [h, w]), "label": int (optional)}.
      image_size: output side length.

    Returns:
      {"image": float32 [image_size, image_size, C] in [-1, 1], "label": int32 scalar} (no
      "label" key if the example has none).
    """
    batch = preprocess_examples([example], image_size)
    return {k: v[0] for k, v in batch.items()}


def _read(source: Sequence[dict[str, Any]], indices: Sequence[int]) -> list[dict[str, Any]]:
    """Reads examples, through the source's batched `__getitems__` when it has one (4x faster)."""
    getitems = getattr(source, "__getitems__", None)
    indices = [int(i) for i in indices]
    return list(getitems(indices)) if getitems else [source[i] for i in indices]


def preprocess_examples(
    examples: Sequence[dict[str, Any]],
    image_size: int,
) -> dict[str, np.ndarray]:
    """Preprocesses and stacks examples (vectorised when all images share a shape).

    Returns:
      {"image": float32 [B, image_size, image_size, C], "label": int32 [B]} ("label" only if the
      examples have one).
    """
    raw = [_to_nhwc_uint8(e["image"]) for e in examples]
    if len({im.shape for im in raw}) == 1:
        images = preprocess_images(np.stack(raw), image_size)
    else:  # Variable-size images (e.g. LSUN): one at a time.
        images = np.stack([preprocess_images(im[None], image_size)[0] for im in raw])
    out = {"image": images}  # [B, H, W, C]
    if "label" in examples[0]:
        out["label"] = np.asarray([e["label"] for e in examples], dtype=np.int32)  # [B]
    return out


def _read_and_preprocess(
    source: Sequence[dict[str, Any]], indices: np.ndarray, *, image_size: int
) -> dict[str, np.ndarray]:
    return preprocess_examples(_read(source, indices), image_size)  # indices: [B]


def make_train_dataset(
    source: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    image_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
) -> grain.MapDataset:
    """Infinite grain `MapDataset` of preprocessed batches (random access by batch index).

    The examples are shuffled with `seed` and reshuffled every epoch (grain folds the epoch
    number into the seed); batches may straddle epochs. `batch_size` is the global batch: each
    of `shard_count` processes reads only its `batch_size / shard_count` rows of it (see
    `data/batch_indices.py`), so the global batches do not depend on the process count. The
    pipeline shuffles and batches example *indices*, then reads each batch with one batched read.
    """
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}.")
    indices = batch_indices.global_batch_indices(
        len(source),
        global_batch_size=batch_size,
        seed=seed,
        shard_index=shard_index,
        shard_count=shard_count,
    )  # [batch_size / shard_count]
    # A partial of module-level functions (not a lambda) keeps the pipeline picklable for grain
    # multiprocessing workers.
    return indices.map(functools.partial(_read_and_preprocess, source, image_size=image_size))


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
) -> grain.DatasetIterator:
    """Endless iterator of training batches; deterministic given `seed`, resumable.

    Args:
      source: random-access examples (e.g. `datasets.get_data_source(...)`).
      batch_size: examples per global batch (this process gets batch_size / shard_count).
      image_size: output side length (28 -> 32 pads 2 px of -1 on each side).
      seed: shuffle seed (0 <= seed < 2**32).
      shard_index: this process's shard (e.g. `jax.process_index()`).
      shard_count: number of shards (e.g. `jax.process_count()`).
      num_threads: background threads preparing batches (0: prepared on `next()` in the caller's
        thread; 1 overlaps loading with a training step that releases the GIL).
      prefetch: batches read ahead when `num_threads > 0`.

    Returns:
      A `grain.DatasetIterator` yielding {"image": float32 [B, H, W, C], "label": int32 [B]};
      `get_state()` returns a JSON-serialisable dict for `set_state()`.
    """
    ds = make_train_dataset(
        source,
        batch_size=batch_size,
        image_size=image_size,
        seed=seed,
        shard_index=shard_index,
        shard_count=shard_count,
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
        raise ValueError("Source is empty.")
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
