"""Fashion-MNIST layout canvases: 1-4 clothing items per canvas, with their classes and boxes.

Generated on access, offline, from the Debian package ``dataset-fashion-mnist``
(`fashion_mnist_idx`); nothing is stored. Each example::

    {"image": uint8 [S, S, 1] (items on black), "boxes": float32 [4, 4] (x0, y0, x1, y1) in
     [0, 1], "classes": int32 [4] (Fashion-MNIST classes, `PAD_CLASS` = 10 for padding),
     "num_objects": int in [1, 4], "caption": str, e.g. "sneaker, bag"}

A canvas is `layout_canvas.compose` with its defaults (1-4 items, each 30-50 % of the canvas
side, boxes that never overlap, 50 tries per item; about 26/31/31/12 % of the canvases hold
1/2/3/4 items) and S = `canvas_size` (default 64). Splits:
"train" (60,000 canvases) draws its items only from Fashion-MNIST's 60k training images, "test"
(10,000) only from its 10k test images, so a classifier of the source data judges held-out
canvases on held-out items. Canvas i of a split depends only on (seed, split, i, canvas_size):
its generator is ``numpy.random.default_rng([seed, split id, i])``. tfds slicing works
("train[:1000]", "test[-10%:]").
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from ldm_jax.data import fashion_mnist_idx, layout_canvas, split_slices

NAME = "fashion_mnist_layout"
SPLITS = {"train": 60000, "test": 10000}
MAX_OBJECTS = 4
NUM_CLASSES = len(fashion_mnist_idx.CLASS_NAMES)
PAD_CLASS = NUM_CLASSES
DEFAULT_CANVAS_SIZE = 64
MIN_CANVAS_SIZE = 16
_SPLIT_IDS = {"train": 0, "test": 1}


@functools.lru_cache(maxsize=4)
def _items(split: str, directory: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, 28, 28, 1] items and int64 [N] labels of a Fashion-MNIST split (read once)."""
    images, labels = fashion_mnist_idx.read_idx_arrays(split, directory)
    return images[..., None], labels


def caption(classes: np.ndarray, num_objects: int) -> str:
    """The objects' class names, lowercased, in placement order: "sneaker, bag"."""
    names = fashion_mnist_idx.CLASS_NAMES
    return ", ".join(names[int(c)].lower() for c in classes[:num_objects])


def make_example(seed: int, split: str, index: int, canvas_size: int) -> dict[str, Any]:
    """Canvas `index` of `split` (see the module doc); a pure function of its arguments."""
    items, labels = _items(split, fashion_mnist_idx.source_dir())
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    layout = layout_canvas.compose(
        items, labels, rng, canvas_size=canvas_size, max_objects=MAX_OBJECTS, pad_class=PAD_CLASS
    )
    return {
        "image": layout.image,  # [S, S, 1]
        "boxes": layout.boxes,  # [4, 4]
        "classes": layout.classes,  # [4]
        "num_objects": layout.num_objects,
        "caption": caption(layout.classes, layout.num_objects),
    }


class FashionMnistLayout(Sequence):
    """Random-access layout canvases (generated on access; picklable for grain workers)."""

    def __init__(self, split: str = "train", *, canvas_size: int | None = None, seed: int = 0):
        """Checks the arguments and reads the source split(s) once.

        Raises:
          ValueError: invalid split or canvas size.
          FileNotFoundError: the Debian package is missing (with the install command).
        """
        self.canvas_size = int(canvas_size or DEFAULT_CANVAS_SIZE)
        if self.canvas_size < MIN_CANVAS_SIZE:
            raise ValueError(
                f"{NAME} needs a canvas of at least {MIN_CANVAS_SIZE} px (image_size), got "
                f"{self.canvas_size}."
            )
        self.seed = int(seed)
        self.split = split
        ranges = split_slices.resolve_split(split if isinstance(split, str) else "", SPLITS, NAME)
        self._index = split_slices.index_table(ranges, _SPLIT_IDS)  # [N, 2]
        for name in {s for s, _, _ in ranges}:
            _items(name, fashion_mnist_idx.source_dir())  # Fail fast if the package is missing.

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        split_id, i = self._index[index]
        split = ("train", "test")[int(split_id)]
        return make_example(self.seed, split, int(i), self.canvas_size)

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self[int(i)] for i in indices]
