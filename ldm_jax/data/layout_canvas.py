"""Layout canvases: a few items pasted at random places and scales, each with its class and box.

`compose` draws one canvas from a pool of items (e.g. Fashion-MNIST images) with a numpy
Generator, so a canvas is a pure function of the generator's seed:

1. The number of objects n is uniform in [min_objects, max_objects].
2. For each object: an item uniform over the pool; a side s = round(u * canvas_size) with u
   uniform in [min_scale, max_scale] (at least 2 px); the item resized to s x s with Pillow's
   bilinear filter (antialiased when reducing); its **box** is the tight box of its inked pixels
   (value > 0 in any channel), not of the s x s square, as the paper's object boxes are.
3. A position uniform among those that keep the box inside the canvas. A position is accepted
   when the box overlaps every earlier box by at most `max_overlap` of the smaller box's area
   (0: boxes never overlap); after `max_tries` rejected positions the object is dropped and the
   canvas keeps the objects placed so far (the first object always fits).
4. Items are pasted with a per-pixel maximum over a black (0) canvas, so every inked canvas pixel
   lies inside the box of an object that inked it.

Boxes are stored as normalised pixel-edge coordinates (x0, y0, x1, y1): pixel (row r, column c)
is inside the box when x0 * S <= c < x1 * S and y0 * S <= r < y1 * S, for S = canvas_size.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image


class Layout(NamedTuple):
    """One canvas and its objects (padded to `max_objects`)."""

    image: np.ndarray  # uint8 [S, S, C]
    boxes: np.ndarray  # float32 [max_objects, 4] (x0, y0, x1, y1) in [0, 1]; 0 for padding
    classes: np.ndarray  # int32 [max_objects]; `pad_class` for padding
    num_objects: int


def resize_item(item: np.ndarray, side: int) -> np.ndarray:
    """uint8 [h, w, C] -> uint8 [side, side, C], each channel with Pillow's bilinear filter."""
    channels = [
        np.asarray(Image.fromarray(item[..., c]).resize((side, side), Image.Resampling.BILINEAR))
        for c in range(item.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def ink_box(item: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right), end-exclusive, of the pixels > 0 of uint8 [h, w, C]; None if
    the item is blank."""
    ink = (item > 0).any(axis=-1)  # [h, w]
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def overlap_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection area of boxes a, b [4] (top, left, bottom, right) over the smaller area."""
    h = min(a[2], b[2]) - max(a[0], b[0])
    w = min(a[3], b[3]) - max(a[1], b[1])
    if h <= 0 or w <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(h * w) / float(smaller)


def _place(
    rng: np.random.Generator,
    box: tuple[int, int, int, int],
    placed: list[np.ndarray],
    size: int,
    max_overlap: float,
    max_tries: int,
) -> np.ndarray | None:
    """The item's box moved to an accepted position on the canvas (see module doc), or None."""
    top, left, bottom, right = box
    h, w = bottom - top, right - left
    for _ in range(max_tries):
        y, x = int(rng.integers(size - h + 1)), int(rng.integers(size - w + 1))
        moved = np.array([y, x, y + h, x + w])
        if all(overlap_fraction(moved, other) <= max_overlap for other in placed):
            return moved
    return None


def compose(
    items: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    canvas_size: int,
    max_objects: int = 4,
    min_objects: int = 1,
    min_scale: float = 0.3,
    max_scale: float = 0.5,
    max_overlap: float = 0.0,
    max_tries: int = 50,
    pad_class: int = -1,
) -> Layout:
    """Draws one canvas (see the module doc).

    Args:
      items: uint8 [N, h, w, C] item pool, ink > 0 on a 0 background.
      labels: int [N] class of each item.
      rng: the generator; the canvas depends only on its state.
      canvas_size: S, the canvas side in pixels.
      max_objects: the most objects, and the padded length of boxes and classes.
      min_objects: the fewest objects drawn (fewer remain if they do not fit).
      min_scale, max_scale: item side as a fraction of S.
      max_overlap: the largest accepted overlap of two boxes, as a fraction of the smaller.
      max_tries: positions tried per object before it is dropped.
      pad_class: the class of padding slots.

    Returns:
      The `Layout`; objects in the order they were placed.
    """
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"Need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}.")
    if not 0 < min_scale <= max_scale <= 1:
        raise ValueError(f"Need 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}.")
    canvas = np.zeros((canvas_size, canvas_size, items.shape[-1]), np.uint8)  # [S, S, C]
    boxes = np.zeros((max_objects, 4), np.float32)
    classes = np.full((max_objects,), pad_class, np.int32)
    placed: list[np.ndarray] = []  # (top, left, bottom, right) on the canvas
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        index = int(rng.integers(len(items)))
        side = max(2, int(round(rng.uniform(min_scale, max_scale) * canvas_size)))
        item = resize_item(items[index], side)  # [s, s, C]
        box = ink_box(item)
        if box is None:
            continue
        spot = _place(rng, box, placed, canvas_size, max_overlap, max_tries if placed else 1)
        if spot is None:
            continue
        top, left, bottom, right = (int(v) for v in spot)
        ink = item[box[0] : box[2], box[1] : box[3]]  # [h, w, C]
        canvas[top:bottom, left:right] = np.maximum(canvas[top:bottom, left:right], ink)
        k = len(placed)
        boxes[k] = np.array([left, top, right, bottom], np.float32) / canvas_size
        classes[k] = int(labels[index])
        placed.append(spot)
    return Layout(canvas, boxes, classes, len(placed))
