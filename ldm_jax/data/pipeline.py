"""Preprocessing and the grain training loader (deterministic, shardable, resumable).

Images go from uint8 [h, w, c] to float32 [H, W, C] in [-1, 1] (NHWC). Non-square images are
centre-cropped to a square; smaller squares are padded centrally with -1 (black), larger ones are
downscaled with Pillow (bicubic, antialiased).

Crops: "center" (the default, evaluation) or "random" (training): a random square of side min(h, w)
along the longer side and a horizontal flip with probability 1/2, as the paper's loaders do after
resizing the shorter side (the image folder source stores images resized so). The random choices
of global batch b, row r depend only on (seed, b, r): the same whatever the process count, and
resumed with the iterator.

Training batches are dicts of numpy arrays: image float32 [B, H, W, C], label int32 [B] (zeros if
the dataset has no "label"), and where the dataset has them caption object [B] (str) and
segmentation int32 [B, H, W] (class ids: cropped like the image, resized with nearest neighbour,
padded with 0). The loader iterator's `get_state()` is a small JSON-serialisable dict that can be
stored in a checkpoint and handed back to `set_state()` to resume on the next batch.
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
CROPS = ("center", "random")


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


def _check_crop(crop: str) -> str:
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}.")
    return crop


def convert_channels(image: np.ndarray, channels: int | None) -> np.ndarray:
    """uint8 [h, w, c] -> [h, w, channels]: grey repeated, RGB -> Pillow's integer luma, RGBA
    composited over white; unchanged when `channels` is None or already right."""
    c = image.shape[-1]
    if channels is None or c == channels:
        return image
    if c == 4:  # RGBA over white.
        alpha = image[..., 3:].astype(np.uint32)
        rgb = (image[..., :3].astype(np.uint32) * alpha + 255 * (255 - alpha) + 127) // 255
        return convert_channels(rgb.astype(np.uint8), channels)
    if c == 1 and channels == 3:
        return np.repeat(image, 3, axis=-1)
    if c == 3 and channels == 1:  # Pillow's "L": (19595 R + 38470 G + 7471 B + 2^15) >> 16.
        rgb = image.astype(np.uint32)
        grey = (19595 * rgb[..., 0] + 38470 * rgb[..., 1] + 7471 * rgb[..., 2] + 0x8000) >> 16
        return grey.astype(np.uint8)[..., None]
    raise ValueError(f"Cannot convert {c}-channel images to {channels} channels.")


def _square_window(h: int, w: int, rng: np.random.Generator | None) -> tuple[int, int, int, bool]:
    """(top, left, side, flip) of the square crop: centred without rng, random (+flip) with it."""
    s = min(h, w)
    if rng is None:
        return (h - s) // 2, (w - s) // 2, s, False
    return int(rng.integers(h - s + 1)), int(rng.integers(w - s + 1)), s, bool(rng.random() < 0.5)


def _segmentation(seg: np.ndarray, window: tuple[int, int, int, bool], size: int) -> np.ndarray:
    """uint8 [h, w] class ids -> int32 [size, size]: cropped, flipped, nearest-resized or padded."""
    top, left, s, flip = window
    seg = np.asarray(seg, np.uint8)[top : top + s, left : left + s]  # [s, s]
    if flip:
        seg = seg[:, ::-1]
    if s > size:
        seg = np.asarray(
            Image.fromarray(np.ascontiguousarray(seg)).resize(
                (size, size), Image.Resampling.NEAREST
            )
        )
    elif s < size:
        before = (size - s) // 2
        seg = np.pad(seg, ((before, size - s - before),) * 2)
    return seg.astype(np.int32)


def preprocess_batch(
    examples: Sequence[dict[str, Any]],
    image_size: int,
    *,
    channels: int | None = None,
    crop: str = "center",
    rngs: Sequence[np.random.Generator] | None = None,
) -> dict[str, np.ndarray]:
    """Preprocesses and stacks examples into every key the dataset has (see module doc).

    Args:
      examples: dicts with "image" uint8 [h, w, C] and optionally "label", "caption",
        "segmentation" uint8 [h, w].
      image_size: output side length.
      channels: output channels (None: as stored); see `convert_channels`.
      crop: "center", or "random" with one generator per example in `rngs`.

    Returns:
      {"image": float32 [B, S, S, C'], "label": int32 [B] (zeros if none), "caption": object [B]
      and "segmentation": int32 [B, S, S] when the examples have them}.
    """
    if _check_crop(crop) == "random" and (rngs is None or len(rngs) != len(examples)):
        raise ValueError("crop='random' needs one numpy Generator per example (rngs).")
    raw = [convert_channels(_to_nhwc_uint8(e["image"]), channels) for e in examples]
    if crop == "center":
        windows = [_square_window(*im.shape[:2], None) for im in raw]
        out = preprocess_examples([{"image": im} for im in raw], image_size)
    else:
        windows = [_square_window(*im.shape[:2], rng) for im, rng in zip(raw, rngs, strict=True)]
        squares = []
        for im, (top, left, side, flip) in zip(raw, windows, strict=True):
            square = im[top : top + side, left : left + side]
            squares.append(square[:, ::-1] if flip else square)
        out = {"image": np.stack([preprocess_images(sq[None], image_size)[0] for sq in squares])}
    first = examples[0]
    out["label"] = np.asarray(
        [e["label"] for e in examples] if "label" in first else np.zeros(len(examples)), np.int32
    )  # [B]
    if "caption" in first:
        captions = [e["caption"] for e in examples]
        out["caption"] = np.asarray(
            [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in captions], object
        )  # [B]
    if "segmentation" in first:
        out["segmentation"] = np.stack(
            [
                _segmentation(e["segmentation"], w, image_size)
                for e, w in zip(examples, windows, strict=True)
            ]
        )  # [B, S, S]
    return out


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
    _check_crop(crop)
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
        raise ValueError("Source is empty.")
    out: dict[str, np.ndarray] = {}
    for start in range(0, n, chunk_size):
        rows = range(start, min(n, start + chunk_size))
        rngs = _example_rngs(seed, 0, rows) if _check_crop(crop) == "random" else None
        chunk = preprocess_batch(
            _read(source, rows), image_size, channels=channels, crop=crop, rngs=rngs
        )
        for key, value in chunk.items():
            if key not in out:  # Preallocate: concatenating chunks doubles peak memory.
                out[key] = np.empty((n, *value.shape[1:]), value.dtype)
            out[key][start : start + len(value)] = value
    return out
