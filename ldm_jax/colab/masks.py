"""Inpainting masks for notebooks, and the PNG files the sample tasks read.

A mask is float32 [H, W, 1] in {0, 1} with 1 (white in a PNG) marking the pixels to fill in, as
`python -m ldm_jax.sample --task inpaint --mask` reads it. Notebooks draw one as a rectangle
(`rectangle`, from two range sliders) or take an uploaded picture (`from_picture` of
`show.decode_upload(upload_bytes(widget.value))`), then hand image and mask to
`sampling.tasks.run` as PNG paths (`write_image`, `write_mask`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ldm_jax.sampling import image_inputs
from ldm_jax.sampling import images as image_grid

# An uploaded mask may differ from the image's aspect ratio by this fraction (rounding).
ASPECT_TOLERANCE = 0.02


def rectangle(
    height: int, width: int, x: tuple[int, int], y: tuple[int, int]
) -> np.ndarray:  # [H, W, 1]
    """A mask whose hole is columns x[0]..x[1] and rows y[0]..y[1], both ends included.

    The values of two `IntRangeSlider`s over [0, width - 1] and [0, height - 1].

    Raises:
      ValueError: a range that is reversed or leaves the image.
    """
    for name, (lo, hi), side in (("x", x, width), ("y", y, height)):
        if not 0 <= lo <= hi < side:
            raise ValueError(
                f"the rectangle's {name} range ({lo}, {hi}) must satisfy 0 <= start <= end <= "
                f"{side - 1} (pixels of a {width}x{height} image, both ends included)."
            )
    mask = np.zeros((height, width, 1), np.float32)
    mask[y[0] : y[1] + 1, x[0] : x[1] + 1] = 1.0
    return mask


def from_picture(picture: np.ndarray, height: int, width: int) -> np.ndarray:  # [H, W, 1]
    """A drawn mask (uint8 [h, w] or [h, w, C], white = fill in) resized to height x width.

    The picture is made grey, resized (bilinear; any size with the image's aspect ratio), then
    thresholded at 50 % grey.

    Raises:
      ValueError: not a 2-D picture of 1, 3 or 4 channels, another aspect ratio than the image's,
        or no white pixel (nothing to fill in).
    """
    picture = np.asarray(picture)
    if picture.ndim == 3 and picture.shape[-1] == 1:
        picture = picture[..., 0]
    if picture.ndim not in (2, 3) or (picture.ndim == 3 and picture.shape[-1] not in (3, 4)):
        raise ValueError(
            f"a mask must be a grey or RGB picture [H, W] or [H, W, 1|3|4], got shape "
            f"{picture.shape}."
        )
    h, w = picture.shape[:2]
    if abs((h / w) / (height / width) - 1.0) > ASPECT_TOLERANCE:
        raise ValueError(
            f"the mask is {w}x{h} (width x height) but the image is {width}x{height}: draw the "
            "mask at the image's aspect ratio (any size; it is resized to the image)."
        )
    grey = Image.fromarray(picture.astype(np.uint8))
    grey = grey.convert("L").resize((width, height), Image.BILINEAR)
    mask = np.asarray(grey, np.float32) / 255.0 >= image_inputs.MASK_THRESHOLD
    mask = mask.astype(np.float32)[..., None]
    check_hole(mask)
    return mask


def upload_bytes(value: Any) -> bytes:
    """The last file of an ipywidgets `FileUpload.value`: a tuple of dicts with "content"
    (ipywidgets 8) or a dict of file name to such a dict (ipywidgets 7, Colab's).

    Raises:
      ValueError: if no file was uploaded.
    """
    files = list(value.values()) if isinstance(value, dict) else list(value or ())
    if not files:
        raise ValueError("no file uploaded yet: press Upload and pick a mask image.")
    return bytes(files[-1]["content"])


def check_hole(mask: np.ndarray) -> None:
    """Raises ValueError unless `mask` [H, W, 1] marks at least one pixel to fill in."""
    if not np.any(np.asarray(mask) > 0):
        raise ValueError("the mask has no white pixel: white marks the pixels to fill in.")


def masked(image: np.ndarray, mask: np.ndarray, fill: float = 0.0) -> np.ndarray:  # [H, W, C]
    """`image` [H, W, C] in [-1, 1] with its hole (mask [H, W, 1], 1 = hole) set to `fill`
    (0: mid grey, visible on black and white backgrounds)."""
    return np.where(np.asarray(mask) > 0, np.float32(fill), np.asarray(image, np.float32))


def as_image(mask: np.ndarray, channels: int) -> np.ndarray:  # [H, W, channels]
    """The mask [H, W, 1] as an image in [-1, 1] (hole white) with `channels` channels."""
    return np.repeat(np.asarray(mask, np.float32) * 2.0 - 1.0, channels, axis=-1)


def write_image(image: np.ndarray, path: str) -> str:
    """Writes `image` float [H, W, 1|3] in [-1, 1] as a PNG (creating the folder); returns path."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"an image must be [H, W, 1|3], got shape {image.shape}.")
    return image_grid.save_png(path, image_grid.to_uint8(image))


def write_mask(mask: np.ndarray, path: str) -> str:
    """Writes `mask` [H, W, 1] in {0, 1} as a black-and-white PNG (white = fill in)."""
    mask = np.asarray(mask)
    if mask.ndim != 3 or mask.shape[-1] != 1:
        raise ValueError(f"a mask must be [H, W, 1], got shape {mask.shape}.")
    return image_grid.save_png(path, np.where(mask > 0, 255, 0).astype(np.uint8))
