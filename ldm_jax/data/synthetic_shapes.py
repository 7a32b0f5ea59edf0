"""Synthetic shapes: a generated, offline, deterministic toy dataset with every kind of condition.

Each example is one coloured shape on a plain background of another colour:

* "image": uint8 [image_size, image_size, channels] (channels 3: RGB; 1: Pillow's luma of it);
* "label": int in [0, num_classes);
* "caption": str, e.g. "a red circle on a blue background";
* "segmentation": uint8 [image_size, image_size], 0 for background and label + 1 on the shape
  (so a segmentation map has `num_segmentation_classes(num_classes) = num_classes + 1` classes).

Classes: with num_classes <= 6 (the default, 6) a class is a shape (`SHAPES[label]`) drawn in a
random colour; with 6 < num_classes <= 48 a class is a shape and a colour, `SHAPES[label % 6]` in
`COLOURS[label // 6]`. The background colour is drawn among those that differ from the shape's in
luma by at least 50 (so the shape stays visible in grey too). Shapes are drawn without
antialiasing: every shape pixel has exactly the named colour.

Splits: "train" (512 examples) and "test" (128), tfds-style slicing and unions allowed
("train[:64]", "train[10%:]", "train+test"). Example i of a split depends only on (seed, split,
i, image_size, channels, num_classes): it is generated on access, nothing is stored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ldm_jax.data import image_files, split_slices

SPLITS = {"train": 512, "test": 128}
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
COLOURS = {  # name -> RGB
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "purple": (170, 60, 200),
    "cyan": (40, 200, 210),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
}
BACKGROUNDS = {**COLOURS, "black": (20, 20, 20), "gray": (128, 128, 128)}
DEFAULT_IMAGE_SIZE = 32
DEFAULT_NUM_CLASSES = len(SHAPES)
MAX_NUM_CLASSES = len(SHAPES) * len(COLOURS)
_MIN_LUMA_GAP = 50.0
_SPLIT_IDS = {"train": 0, "test": 1}


def luma(rgb: tuple[int, int, int]) -> float:
    """ITU-R 601-2 luma, as Pillow's RGB -> "L" conversion."""
    return rgb[0] * 299 / 1000 + rgb[1] * 587 / 1000 + rgb[2] * 114 / 1000


def num_segmentation_classes(num_classes: int = DEFAULT_NUM_CLASSES) -> int:
    """Classes in a segmentation map: background plus one per label."""
    return num_classes + 1


def class_name(label: int, num_classes: int = DEFAULT_NUM_CLASSES) -> str:
    """ "circle" (per-shape classes) or "red circle" (shape-and-colour classes)."""
    shape = SHAPES[label % len(SHAPES)]
    if num_classes <= len(SHAPES):
        return shape
    return f"{list(COLOURS)[label // len(SHAPES)]} {shape}"


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape of circumradius r, rotated by `angle` (radians)."""
    if kind == "square":
        radii, steps = [r], 4
    elif kind == "triangle":
        radii, steps = [r], 3
    elif kind == "star":
        radii, steps = [r, 0.45 * r], 10
    else:  # cross: a plus sign of arm half-width w.
        w = 0.35 * r
        points = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r)]
        points += [(-x, -y) for x, y in points]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]
    return [
        (
            cx + radii[k % len(radii)] * math.cos(angle + 2 * math.pi * k / steps),
            cy + radii[k % len(radii)] * math.sin(angle + 2 * math.pi * k / steps),
        )
        for k in range(steps)
    ]


def _shape_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """bool [size, size] of one randomly placed, sized and rotated shape (never empty)."""
    r = rng.uniform(0.2, 0.4) * size  # Circumradius.
    cx, cy = rng.uniform(r, size - r, size=2) - 0.5
    angle = rng.uniform(0, 2 * math.pi)
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    box = [cx - r, cy - r, cx + r, cy + r]
    if kind == "circle":
        draw.ellipse(box, fill=1)
    elif kind == "ring":
        draw.ellipse(box, fill=1)
        q = 0.55 * r
        draw.ellipse([cx - q, cy - q, cx + q, cy + q], fill=0)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=1)
    out = np.asarray(mask, dtype=bool).copy()
    if not out.any():  # Sub-pixel shapes at tiny sizes: keep one pixel.
        out[min(size - 1, max(0, int(cy + 0.5))), min(size - 1, max(0, int(cx + 0.5)))] = True
    return out


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_example(
    seed: int, split_id: int, index: int, image_size: int, channels: int, num_classes: int
) -> dict[str, Any]:
    """Example `index` of split `split_id` (see module doc); a pure function of its arguments."""
    rng = np.random.default_rng([seed, split_id, index])
    label = int(rng.integers(num_classes))
    shape = SHAPES[label % len(SHAPES)]
    names = list(COLOURS)
    if num_classes <= len(SHAPES):
        colour = names[int(rng.integers(len(names)))]
    else:
        colour = names[label // len(SHAPES)]
    fg = COLOURS[colour]
    choices = [n for n, c in BACKGROUNDS.items() if abs(luma(c) - luma(fg)) >= _MIN_LUMA_GAP]
    background = choices[int(rng.integers(len(choices)))]
    mask = _shape_mask(shape, image_size, rng)  # [H, W]
    rgb = np.where(mask[..., None], np.uint8(fg), np.uint8(BACKGROUNDS[background]))
    rgb = rgb.astype(np.uint8)  # [H, W, 3]
    if channels == 1:
        image = np.asarray(Image.fromarray(rgb, "RGB").convert("L"))[..., None]  # [H, W, 1]
    else:
        image = rgb
    return {
        "image": image,
        "label": label,
        "caption": f"{_article(colour)} {colour} {shape} on {_article(background)} {background} "
        "background",
        "segmentation": (mask * (label + 1)).astype(np.uint8),  # [H, W]
    }


def resolve_split(split: str, sizes: dict[str, int] | None = None) -> list[tuple[str, int, int]]:
    """(split, start, stop) ranges of a tfds-style split string such as "train[:64]+test"."""
    return split_slices.resolve_split(split, sizes or SPLITS, "synthetic_shapes")


class SyntheticShapes(Sequence):
    """Random-access synthetic examples (generated on access; picklable for grain workers)."""

    def __init__(
        self,
        split: str = "train",
        *,
        image_size: int | None = None,
        channels: int | None = None,
        num_classes: int | None = None,
        seed: int = 0,
    ):
        self.image_size = int(image_size or DEFAULT_IMAGE_SIZE)
        self.channels = image_files.check_channels(channels or 3)
        self.num_classes = int(num_classes or DEFAULT_NUM_CLASSES)
        if self.image_size < 4:
            raise ValueError(f"synthetic_shapes needs image_size >= 4, got {self.image_size}.")
        if not 1 <= self.num_classes <= MAX_NUM_CLASSES:
            raise ValueError(
                f"synthetic_shapes has 1 to {MAX_NUM_CLASSES} classes ({len(SHAPES)} shapes x "
                f"{len(COLOURS)} colours), got num_classes={self.num_classes}."
            )
        self.seed = int(seed)
        self.split = split
        ranges = resolve_split(split if isinstance(split, str) else "")
        self._items = np.concatenate(
            [
                np.stack([np.full(b - a, _SPLIT_IDS[s]), np.arange(a, b)], axis=1)
                for s, a, b in ranges
            ]
        ).astype(np.int64)  # [N, 2]: (split id, index in split)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        split_id, i = self._items[index]
        return make_example(
            self.seed, int(split_id), int(i), self.image_size, self.channels, self.num_classes
        )

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self[int(i)] for i in indices]
