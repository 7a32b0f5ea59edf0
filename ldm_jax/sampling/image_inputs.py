"""PNG (or any Pillow-readable) inputs of the sample tasks, with one-line errors naming the file."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

# Grey level (fraction of white) at or above which a mask pixel is to be filled in.
MASK_THRESHOLD = 0.5


class ImageInputError(ValueError):
    """An input image is missing, unreadable or of the wrong kind; the message names the file."""


def _open(path: str, flag: str) -> Image.Image:
    if not os.path.isfile(path):
        raise ImageInputError(f"{flag} {path}: no such file.")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ImageInputError(f"{flag} {path}: not a readable image ({reason}).") from None


def read_image(path: str, channels: int, flag: str = "--image") -> np.ndarray:
    """An image as float32 [H, W, channels] in [-1, 1] (converted to grey or RGB).

    Raises:
      ImageInputError: missing or unreadable file, or a channel count other than 1 or 3.
    """
    if channels not in (1, 3):
        raise ImageInputError(f"{flag}: the model takes {channels}-channel images, not pictures.")
    image = _open(path, flag).convert("L" if channels == 1 else "RGB")
    x = np.asarray(image, np.float32) / 127.5 - 1.0
    return x[..., None] if channels == 1 else x


def read_mask(path: str, flag: str = "--mask") -> np.ndarray:
    """A mask as float32 [H, W, 1] in {0, 1}: 1 (white, >= 50% grey) marks pixels to fill in."""
    grey = np.asarray(_open(path, flag).convert("L"), np.float32) / 255.0
    return (grey >= MASK_THRESHOLD).astype(np.float32)[..., None]


def read_label_map(path: str, num_labels: int, flag: str = "--image") -> np.ndarray:
    """A semantic map as int32 [H, W] of class indices in [0, num_labels).

    The file holds one index per pixel: a greyscale ("L"/"I") or palette ("P") PNG.

    Raises:
      ImageInputError: an RGB(A) file, or an index outside [0, num_labels).
    """
    image = _open(path, flag)
    if image.mode not in ("L", "P", "I", "I;16", "1"):
        raise ImageInputError(
            f"{flag} {path}: a semantic map must be a single-channel label image (PNG mode L or "
            f"P holding class indices), got mode {image.mode}."
        )
    labels = np.asarray(image, np.int64)
    if labels.min() < 0 or labels.max() >= num_labels:
        raise ImageInputError(
            f"{flag} {path}: label {int(labels.max())} is outside the model's {num_labels} classes."
        )
    return labels.astype(np.int32)
