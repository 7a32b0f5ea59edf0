"""tfds-style split strings ("train[:64]", "train[10%:]+test") over splits of known sizes, for
sources that generate examples on access instead of reading a prepared tfds dataset."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from ldm_jax.data.errors import DataError


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


def data_source(builder: Any, split: str, dataset: str) -> Any:
    """`builder.as_data_source(split)`, with a one-line `DataError` for a slice that keeps no
    example (array_record would raise "Paths sequence can not be of 0 length").

    Args:
      builder: a prepared tfds builder.
      split: a valid split string, slices allowed ("train[:10]", "train+test").
      dataset: the dataset's name or folder, for the message.
    """
    sizes = {name: int(info.num_examples) for name, info in builder.info.splits.items()}
    if not sum(b - a for _, a, b in resolve_split(split, sizes, dataset)):
        raise DataError(
            f"Split {split!r} of dataset {dataset!r} holds no examples "
            f"({', '.join(f'{k}: {v}' for k, v in sizes.items())} examples): use a slice that "
            "keeps some (e.g. 'train[:90%]')."
        )
    return builder.as_data_source(split=split)
