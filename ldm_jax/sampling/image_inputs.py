"""PNG (or JPEG, WebP, BMP, GIF, TIFF) inputs of the sample tasks, with one-line errors.

Decoding is the image folder's (`data/image_files.py`): the same formats, EXIF orientation and
conversions (16-bit and float grey scaled to 8 bits, CMYK and palette to RGB, transparency
composited over white), so an image that trains the same way samples the same way. Masks are the
exception for transparency: a transparent mask pixel counts as black (keep), so that a mask
painted on a transparent layer fills in only what was painted. Every problem with a file
(missing, a folder, empty, truncated, corrupt, not an image, too large) is an `ImageInputError`
naming the flag and the file.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ldm_jax.data import image_files

# Grey level (fraction of white) at or above which a mask pixel is to be filled in.
MASK_THRESHOLD = 0.5
_LABEL_MODES = ("L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N", "1")


class ImageInputError(ValueError):
    """An input image is missing, unreadable or of the wrong kind; the message names the file."""


def _open(path: str, flag: str) -> Image.Image:
    if os.path.isdir(path):
        raise ImageInputError(f"{flag} {path}: a folder, not an image file.")
    if not os.path.isfile(path):
        raise ImageInputError(f"{flag} {path}: no such file.")
    try:
        return image_files.open_image(path)
    except image_files.ImageDecodeError as e:
        raise ImageInputError(
            f"{flag} {path}: not a readable image ({e.reason}: {e.detail})."
        ) from None


def _convert(
    image: Image.Image, channels: int, path: str, flag: str, background: int = 255
) -> Image.Image:
    try:
        return image_files.to_mode(image, channels, background=background)
    except (ValueError, OSError, MemoryError) as e:  # A mode Pillow cannot convert.
        detail = " ".join(str(e).split()) or type(e).__name__
        raise ImageInputError(
            f"{flag} {path}: cannot convert mode {image.mode} ({detail})."
        ) from None


def read_image(path: str, channels: int, flag: str = "--image") -> np.ndarray:
    """An image as float32 [H, W, channels] in [-1, 1] (converted to grey or RGB).

    Raises:
      ImageInputError: missing or unreadable file, or a channel count other than 1 or 3.
    """
    if channels not in image_files.SUPPORTED_CHANNELS:
        raise ImageInputError(f"{flag}: the model takes {channels}-channel images, not pictures.")
    image = _convert(_open(path, flag), channels, path, flag)
    x = np.asarray(image, np.float32) / 127.5 - 1.0
    return x[..., None] if channels == 1 else x


def read_mask(path: str, flag: str = "--mask") -> np.ndarray:
    """A mask as float32 [H, W, 1] in {0, 1}: 1 (white, >= 50% grey) marks pixels to fill in;
    transparent pixels count as black."""
    grey = _convert(_open(path, flag), 1, path, flag, background=0)
    return (np.asarray(grey, np.float32) / 255.0 >= MASK_THRESHOLD).astype(np.float32)[..., None]


def read_label_map(path: str, num_labels: int, flag: str = "--image") -> np.ndarray:
    """A semantic map as int32 [H, W] of class indices in [0, num_labels).

    The file holds one index per pixel: a greyscale ("L"/"I") or palette ("P") PNG.

    Raises:
      ImageInputError: an RGB(A) file, or an index outside [0, num_labels).
    """
    image = _open(path, flag)
    if image.mode not in _LABEL_MODES:
        raise ImageInputError(
            f"{flag} {path}: a semantic map must be a single-channel label image (PNG mode L or "
            f"P holding class indices), got mode {image.mode}."
        )
    labels = np.asarray(image, np.int64)  # [H, W]
    if labels.size == 0:
        raise ImageInputError(f"{flag} {path}: an empty ({image.width}x{image.height}) image.")
    if labels.min() < 0 or labels.max() >= num_labels:
        worst = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise ImageInputError(
            f"{flag} {path}: label {worst} is outside the model's {num_labels} classes."
        )
    return labels.astype(np.int32)
