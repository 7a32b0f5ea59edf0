"""tfds-style split strings ("train[:64]", "train[10%:]+test") over splits of known sizes, for
sources that generate examples on access instead of reading a prepared tfds dataset."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds


class _SplitInfo(NamedTuple):
    num_examples: int


def resolve_split(split: str, sizes: dict[str, int], dataset: str) -> list[tuple[str, int, int]]:
    """(split name, start, stop) ranges of `split`.

    Args:
      split: e.g. "train", "test[:100]", "train[:10%]+test".
      sizes: examples per split name.
      dataset: the dataset's name, for the error message.

    Raises:
      ValueError: unknown split name or malformed slice (one line naming the valid splits).
    """
    try:
        instructions = tfds.core.ReadInstruction.from_spec(split.replace(" ", "")).to_absolute(
            {k: _SplitInfo(v) for k, v in sizes.items()}
        )
    except (ValueError, KeyError, AttributeError, AssertionError, TypeError) as e:
        raise ValueError(
            f"Invalid split {split!r} for dataset {dataset!r}: use one of {sorted(sizes)} "
            f"({', '.join(f'{k}: {v}' for k, v in sizes.items())} examples), optionally sliced "
            "like 'train[:64]'."
        ) from e
    ranges = []
    for ins in instructions:  # from_/to may be None or negative, as in Python slices.
        r = range(sizes[ins.splitname])[slice(ins.from_, ins.to)]
        ranges.append((ins.splitname, r.start, max(r.start, r.stop)))
    return ranges


def index_table(ranges: list[tuple[str, int, int]], split_ids: dict[str, int]) -> np.ndarray:
    """int64 [N, 2]: (split id, index within the split) of every example of `ranges`, in order."""
    parts = [
        np.stack([np.full(b - a, split_ids[s]), np.arange(a, b)], axis=1) for s, a, b in ranges
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0, 2), np.int64)
