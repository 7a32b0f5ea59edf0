"""Reading image files into uint8 arrays and resizing them as the paper's loaders do.

The LDM loaders (taming-transformers `ImagePaths`, the ImageNet and super-resolution sets) resize
the shorter side to the training size with Pillow bicubic (antialiased) and then crop a square,
at the centre for evaluation or at random (with a horizontal flip) for training. `read_image`
and `resize_shorter_side` do the first part; the crop is `pipeline`'s job, so that one prepared
copy serves both crops.

Mode conversion (Pillow modes -> the requested 1 or 3 channels):

* 16- and 32-bit grey ("I;16*", "I", "F") is scaled to 8 bits (65535 -> 255), not clipped.
* Images with transparency (RGBA, LA, P with a transparent colour) are composited over white.
* CMYK, YCbCr, palette, 1-bit and the rest go through Pillow's own `convert("RGB")`.
* RGB -> 1 channel is Pillow's "L" (ITU-R 601-2 luma); grey -> 3 channels repeats the plane.
* The EXIF orientation of photos is applied (a portrait photo stays upright).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SUPPORTED_CHANNELS = (1, 3)


def check_channels(channels: int) -> int:
    """Returns `channels` if it is 1 (grey) or 3 (RGB); ValueError otherwise."""
    if channels not in SUPPORTED_CHANNELS:
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}.")
    return int(channels)


def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit grey ("I;16*", or "I" holding 16-bit values) -> 8-bit "L", scaled, not clipped.

    Float images ("F") are taken as 0..255 and clipped.
    """
    array = np.asarray(image).astype(np.float64)
    scaled = np.clip(array, 0, 255) if image.mode == "F" else np.clip(array, 0, 65535) / 257.0
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Converts any Pillow image to "L" (channels=1) or "RGB" (channels=3); see module doc."""
    check_channels(channels)
    if image.mode.startswith("I") or image.mode == "F":
        image = _high_bit_depth_to_l(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if channels == 1:
        return image if image.mode == "L" else image.convert("RGB").convert("L")
    return image if image.mode == "RGB" else image.convert("RGB")


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after scaling the shorter side to `size` (the longer one rounded)."""
    if width <= height:
        return size, max(size, int(round(height * size / width)))
    return max(size, int(round(width * size / height))), size


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Scales so that min(width, height) == size (Pillow bicubic, antialiased); no-op if equal."""
    target = resized_size(image.width, image.height, size)
    if target == image.size:
        return image
    return image.resize(target, Image.Resampling.BICUBIC)


def read_image(path: str, channels: int, size: int | None = None) -> np.ndarray:
    """Reads an image file as uint8 [H, W, channels], the shorter side resized to `size`.

    Args:
      path: an image file Pillow can read (PNG, JPEG, WebP, BMP, ...).
      channels: 1 (grey) or 3 (RGB); see the module doc for the conversions.
      size: the shorter side after resizing (None: keep the file's size).

    Raises:
      OSError / ValueError / Image.DecompressionBombError: unreadable or corrupt file.
    """
    with Image.open(path) as image:
        image.load()  # Decode now, so truncated files fail here.
        image = ImageOps.exif_transpose(image)
        image = to_mode(image, channels)
    if size is not None:
        image = resize_shorter_side(image, size)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array  # [H, W, channels]
