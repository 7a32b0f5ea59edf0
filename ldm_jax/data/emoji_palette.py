"""The colour classes of the emoji segmentation maps: a fixed palette fitted on the train split.

**Classes.** ``CLASS_NAMES``: 0 is "background" (where the glyph is transparent: reduced alpha
< `ALPHA_THRESHOLD` = 128 of 255), 1..8 are colour classes, yellow, orange, red, purple, blue,
green, dark (black outlines, dark greys) and light (white, pale greys and blues). There is no
brown class: browns fall to red, orange or dark (the brown circle U+1F7E4 is red).

**Labelling** (`label_map`): an opaque pixel takes the class of the nearest centroid
(`CENTROIDS_LAB`, squared Euclidean distance in CIELAB, `colour_lab.srgb_to_lab` of its RGB as
stored, i.e. composited over white; ties to the lower class). Nothing is random: a map is a
function of the image and its alpha.

**How the centroids were fitted** (`fit_palette`, reproduced by `fit_on_train_split`, checked by
a test): every pixel with alpha >= 128 of every "train" emoji rendered at 32 px (about 600k
pixels; the held-out "test" emoji are never seen) is converted to CIELAB; Lloyd's k-means starts
from the Lab values of `SEED_RGB` (one hand-picked sRGB colour per class, in class order) and
iterates until no centroid moves by more than 1e-6 (about 20 iterations). Starting from named
colours instead of random ones makes the fit deterministic and keeps each class's name: after
fitting, every centroid is still nearer its own seed than any other. `DISPLAY_RGB` is the mean
sRGB of each class's train pixels (white for the background), for drawing maps.

`label_map_from_rgb` labels an image without alpha (a generated sample) by treating pure white
(L* = 100) as one more centroid, the background: it re-derives maps from samples for mIoU, and
confuses the rare pure-white parts of an emoji with background.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ldm_jax.data import noto_emoji_glyphs
from ldm_jax.data.colour_lab import srgb_to_lab

CLASS_NAMES = ("background", "yellow", "orange", "red", "purple", "blue", "green", "dark", "light")
NUM_CLASSES = len(CLASS_NAMES)
BACKGROUND = 0
ALPHA_THRESHOLD = 128
FIT_SIZE = 32  # The fit reads the 32 px renders.
FIT_TOLERANCE = 1e-6
FIT_MAX_ITERATIONS = 200
# Start of the fit: one sRGB colour per colour class (classes 1..8, in order).
SEED_RGB = np.array(
    [
        (250, 200, 60),  # yellow
        (245, 140, 30),  # orange
        (220, 40, 40),  # red
        (150, 80, 190),  # purple
        (50, 110, 220),  # blue
        (60, 170, 70),  # green
        (150, 150, 150),  # dark (starts at mid grey)
        (240, 240, 240),  # light
    ],
    np.uint8,
)
# `fit_on_train_split()` of noto_emoji (fonts-noto-color-emoji 2.042), rounded to 0.01:
# CIELAB (L*, a*, b*) of classes 1..8.
CENTROIDS_LAB = np.array(
    [
        (83.26, 2.38, 75.97),  # yellow
        (70.63, 21.68, 58.62),  # orange
        (54.65, 56.87, 43.10),  # red
        (51.38, 55.83, -30.28),  # purple
        (49.31, 10.78, -51.84),  # blue
        (67.16, -34.18, 44.35),  # green
        (37.72, 3.87, 5.43),  # dark
        (82.30, -3.84, -3.81),  # light
    ]
)
# Mean sRGB of each class's train pixels; background white.
DISPLAY_RGB = np.array(
    [
        (255, 255, 255),  # background
        (248, 202, 44),
        (234, 156, 53),
        (228, 75, 58),
        (186, 78, 175),
        (41, 117, 206),
        (119, 178, 77),
        (96, 87, 81),
        (189, 207, 212),
    ],
    np.uint8,
)
_WHITE_LAB = np.array([100.0, 0.0, 0.0])


def _nearest(lab: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """float [..., 3], [k, 3] -> int64 [...]: index of the nearest centroid (first on ties)."""
    d = ((lab[..., None, :] - centroids) ** 2).sum(axis=-1)  # [..., k]
    return d.argmin(axis=-1)


def fit_palette(
    pixels: np.ndarray,
    seeds: np.ndarray = SEED_RGB,
    *,
    tolerance: float = FIT_TOLERANCE,
    max_iterations: int = FIT_MAX_ITERATIONS,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Lloyd's k-means in CIELAB from fixed seeds (see the module doc).

    Args:
      pixels: uint8 [N, 3] sRGB colours.
      seeds: uint8 [k, 3] sRGB start of each centroid.
      tolerance: stop when no centroid moves further (Lab units).
      max_iterations: stop after this many updates anyway.

    Returns:
      (centroids float64 [k, 3] CIELAB, mean sRGB float64 [k, 3] of each cluster, iterations).
      A centroid that loses all its pixels stays where it is.
    """
    colours, counts = np.unique(np.asarray(pixels, np.uint8), axis=0, return_counts=True)
    lab = srgb_to_lab(colours)  # [U, 3]
    weights = counts.astype(np.float64)  # [U]
    centroids = srgb_to_lab(np.asarray(seeds, np.uint8))  # [k, 3]
    k = len(centroids)
    iterations = 0
    while True:
        assign = _nearest(lab, centroids)  # [U]
        mass = np.bincount(assign, weights, minlength=k)  # [k]
        sums = np.stack([np.bincount(assign, weights * lab[:, j], k) for j in range(3)], 1)
        moved = np.where(mass[:, None] > 0, sums / np.maximum(mass, 1e-12)[:, None], centroids)
        shift = np.abs(moved - centroids).max()
        centroids = moved
        iterations += 1
        if shift <= tolerance or iterations >= max_iterations:
            break
    assign = _nearest(lab, centroids)
    mass = np.bincount(assign, weights, minlength=k)
    rgb = colours.astype(np.float64) * weights[:, None]
    rgb_sums = np.stack([np.bincount(assign, rgb[:, j], k) for j in range(3)], 1)
    mean_rgb = rgb_sums / np.maximum(mass, 1e-12)[:, None]
    return centroids, mean_rgb, iterations


def train_pixels(size: int = FIT_SIZE, codepoints: Sequence[int] | None = None) -> np.ndarray:
    """uint8 [N, 3]: the opaque pixels (alpha >= 128) of every "train" emoji at `size` px.

    Raises:
      FileNotFoundError: the emoji font is missing.
    """
    chunks = [
        e.images[size][e.alphas[size] >= ALPHA_THRESHOLD]
        for e in noto_emoji_glyphs.iter_emoji((size,), codepoints=codepoints)
        if e.split == "train"
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, 3), np.uint8)


def fit_on_train_split() -> tuple[np.ndarray, np.ndarray, int]:
    """Refits the palette as `CENTROIDS_LAB` was fitted (renders the font: a few seconds)."""
    return fit_palette(train_pixels())


def label_map(
    image: np.ndarray, alpha: np.ndarray, centroids: np.ndarray | None = None
) -> np.ndarray:
    """The class map of an emoji (see the module doc).

    Args:
      image: uint8 [H, W, 3] sRGB, as stored (over white).
      alpha: uint8 [H, W] coverage of the glyph.
      centroids: float [k, 3] CIELAB of classes 1..k; default `CENTROIDS_LAB`.

    Returns:
      uint8 [H, W] in [0, k]: 0 where alpha < `ALPHA_THRESHOLD`, else 1 + nearest centroid.
    """
    centroids = CENTROIDS_LAB if centroids is None else np.asarray(centroids)
    colour = _nearest(srgb_to_lab(image), centroids) + 1  # [H, W]
    return np.where(np.asarray(alpha) >= ALPHA_THRESHOLD, colour, BACKGROUND).astype(np.uint8)


def label_map_from_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [H, W]: the class map without alpha, pure white as background."""
    centroids = np.concatenate([_WHITE_LAB[None], CENTROIDS_LAB])  # [k + 1, 3]
    return _nearest(srgb_to_lab(image), centroids).astype(np.uint8)


def colourise(segmentation: np.ndarray) -> np.ndarray:
    """uint8 [..., H, W] class ids -> uint8 [..., H, W, 3] in `DISPLAY_RGB` (for grids)."""
    return DISPLAY_RGB[np.clip(segmentation, 0, NUM_CLASSES - 1)]
