"""Reading image files into uint8 arrays and resizing them as the paper's loaders do.

The LDM loaders (taming-transformers `ImagePaths`, the ImageNet and super-resolution sets) resize
the shorter side to the training size with Pillow bicubic (antialiased) and then crop a square,
at the centre for evaluation or at random (with a horizontal flip) for training. `read_image`
and `resize_shorter_side` do the first part; the crop is `pipeline`'s job, so that one prepared
copy serves both crops.

Formats: PNG, JPEG (MPO, a JPEG variant, included), WebP, BMP, GIF and TIFF, recognised by
their content whatever the file's extension (`IMAGE_FORMATS`); only the first frame of an
animation or a multi-page TIFF is read. Other formats Pillow knows (EPS, PSD, ...) are refused:
some run external programs, and they are rarely what a training folder means to hold.

Mode conversion (Pillow modes -> the requested 1 or 3 channels):

* 16-bit grey ("I;16*"; 16-bit colour PNGs Pillow already reads as 8-bit RGB) is scaled to 8 bits
  (v / 257: 65535 -> 255, 32768 -> 128), not clipped.
* 32-bit integer grey ("I", e.g. a 32-bit TIFF): values that all fit 0..65535 are 16-bit data
  and scaled as above; otherwise the int32 range 0..2**31-1 is scaled to 0..255 (negatives -> 0).
* Float grey ("F", a float TIFF): values that all lie in [0, 1] are scaled by 255; otherwise
  they are taken as 0..255 and clipped. NaN -> 0.
* Images with transparency (RGBA, LA, PA, P with a transparent colour) are composited over white
  (`background`; the sample CLI's masks use black, so that transparent means "keep").
* CMYK, YCbCr, palette, 1-bit and the rest go through Pillow's own `convert("RGB")`.
* RGB -> 1 channel is Pillow's "L" (ITU-R 601-2 luma); grey -> 3 channels repeats the plane.
* The EXIF orientation of photos is applied (a portrait photo stays upright); a corrupt EXIF
  block leaves the image as stored.

Files that cannot be used raise `ImageDecodeError`, whose `reason` is one of `SKIP_REASONS`
(a folder reader counts them by reason and skips them). Large images: one of more than twice
Pillow's `Image.MAX_IMAGE_PIXELS` (about 179 M pixels) is refused as a decompression bomb
("too large"); smaller ones are read. When the shorter side is at least 6 times the wanted
size, a JPEG is decoded at 1/2, 1/4 or 1/8 scale (`Image.draft`: memory and time shrink with
it) and any other format, decoded whole, is first shrunk by an integer factor (`Image.reduce`,
a box filter), both keeping at least 3 times the wanted size for the final bicubic resize.
"""

from __future__ import annotations

import errno
import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "DIB", "GIF", "TIFF")  # JPEG covers MPO.
_FORMAT_NAMES = ("PNG", "JPEG", "WebP", "BMP", "GIF", "TIFF")
SUPPORTED_CHANNELS = (1, 3)
# Why a file was skipped (`ImageDecodeError.reason`).
MISSING = "missing"  # Vanished after listing, or a broken link.
PERMISSION = "permission denied"
EMPTY = "empty file"
NOT_AN_IMAGE = "not an image"
TRUNCATED = "truncated"
TOO_LARGE = "too large"
CORRUPT = "corrupt"
IO_ERROR = "I/O error"
SKIP_REASONS = (MISSING, PERMISSION, EMPTY, NOT_AN_IMAGE, TRUNCATED, TOO_LARGE, CORRUPT, IO_ERROR)
# The last resize step still shrinks by at least this factor after `draft` / `reduce` (Pillow's
# own `reducing_gap` advice: from 2-3 on the result is indistinguishable from a direct resize).
_REDUCING_GAP = 3
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_ORIENTATION_TAG = 0x0112
_EXIF_TRANSPOSE = {  # EXIF orientation -> the transpose that makes the image upright.
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageDecodeError(ValueError):
    """A file that cannot be used as an image; `reason` is one of `SKIP_REASONS`."""

    def __init__(self, path: str, reason: str, detail: str):
        self.path, self.reason, self.detail = path, reason, detail
        super().__init__(f"{path}: {reason} ({detail})" if detail else f"{path}: {reason}")


def check_channels(channels: int) -> int:
    """Returns `channels` if it is 1 (grey) or 3 (RGB); ValueError otherwise."""
    if channels not in SUPPORTED_CHANNELS:
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}.")
    return int(channels)


def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey -> 8-bit "L", scaled as the module doc says."""
    array = np.asarray(image).astype(np.float64)  # [H, W]
    if image.mode == "F":
        array = np.nan_to_num(array, nan=0.0, posinf=255.0, neginf=0.0)
        in_unit_range = array.size == 0 or (array.min() >= 0.0 and array.max() <= 1.0)
        scaled = array * 255.0 if in_unit_range else np.clip(array, 0.0, 255.0)
    elif image.mode == "I" and array.size and (array.min() < 0 or array.max() > 65535):
        scaled = np.clip(array, 0.0, 2.0**31 - 1) * (255.0 / (2.0**31 - 1))
    else:
        scaled = np.clip(array, 0.0, 65535.0) / 257.0
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


def to_mode(image: Image.Image, channels: int, background: int = 255) -> Image.Image:
    """Converts any Pillow image to "L" (channels=1) or "RGB" (channels=3); see module doc.

    Args:
      image: a loaded Pillow image of any mode.
      channels: 1 or 3.
      background: the grey level transparent pixels are composited over (255: white).
    """
    check_channels(channels)
    if image.mode.startswith("I") or image.mode == "F":
        image = _high_bit_depth_to_l(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        fill = (background, background, background, 255)
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, fill), rgba)
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


def _reason_of(error: BaseException) -> str:
    """The `SKIP_REASONS` entry of an exception raised while opening or decoding a file."""
    if isinstance(error, FileNotFoundError | NotADirectoryError):
        return MISSING
    if isinstance(error, PermissionError):
        return PERMISSION
    if isinstance(error, UnidentifiedImageError):
        return NOT_AN_IMAGE
    if isinstance(error, Image.DecompressionBombError | MemoryError):
        return TOO_LARGE
    if isinstance(error, OSError) and error.errno in (errno.EIO, errno.EISDIR, errno.ENXIO):
        return IO_ERROR
    if isinstance(error, EOFError) or "truncated" in str(error).lower():
        return TRUNCATED
    return CORRUPT


def _draft(image: Image.Image, size: int | None) -> None:
    """Before decoding: asks a large JPEG for a 1/2, 1/4 or 1/8 scale decode (`Image.draft`)
    that keeps the shorter side at least `_REDUCING_GAP` times `size`."""
    if size is not None and image.format in ("JPEG", "MPO"):
        if min(image.size) // (size * _REDUCING_GAP) >= 2:
            image.draft(None, (size * _REDUCING_GAP, size * _REDUCING_GAP))


def _reduce(image: Image.Image, size: int | None) -> Image.Image:
    """After decoding: shrinks a large image by the integer factor (`Image.reduce`, a box
    filter) that keeps the shorter side at least `_REDUCING_GAP` times `size`."""
    if size is None or image.mode in ("P", "PA", "1"):
        return image  # Averaging palette indices means nothing: converted whole.
    factor = min(image.size) // (size * _REDUCING_GAP)
    if factor < 2:
        return image
    if image.mode.startswith("I;16"):
        image = image.convert("I")  # Same values, in a mode `reduce` takes.
    return image.reduce(factor)


def _orient(image: Image.Image, orientation: int) -> Image.Image:
    """Applies an EXIF orientation (1-8) as `ImageOps.exif_transpose` does."""
    method = _EXIF_TRANSPOSE.get(orientation)
    return image if method is None else image.transpose(method)


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # A corrupt EXIF block: the pixels are fine, keep them as stored.
        return 1


def open_image(path: str, size: int | None = None) -> Image.Image:
    """Opens, decodes and orients one image file (see the module doc), in its own mode.

    Args:
      path: the file.
      size: the shorter side the caller will resize to: a large image is decoded or reduced
        to no less than 3x that (None: full size).

    Returns:
      A loaded Pillow image, EXIF orientation applied.

    Raises:
      ImageDecodeError: the file is missing, unreadable, empty, not an image of
        `IMAGE_FORMATS`, truncated, corrupt or too large (`reason` says which).
    """
    try:
        if os.stat(path).st_size == 0:
            raise ImageDecodeError(path, EMPTY, "0 bytes")
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x MAX_IMAGE_PIXELS and raises above: those are read
            # (shrunk early), whatever the process's warning filters say.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Corrupt EXIF and the like: the file is used, or skipped with its own reason.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            with Image.open(path, formats=IMAGE_FORMATS) as image:
                _draft(image, size)
                image.load()  # Decode now, so truncated files fail here.
                if not image.width or not image.height:
                    raise ImageDecodeError(path, CORRUPT, f"{image.width}x{image.height} pixels")
                orientation = _exif_orientation(image)
                image = _reduce(image, size)
        return _orient(image, orientation)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as e:
        if _has_image_signature(path):  # Pillow hides why a PNG/JPEG/... header was refused.
            raise ImageDecodeError(path, CORRUPT, "the header of the format is broken") from e
        raise ImageDecodeError(path, NOT_AN_IMAGE, _detail(e)) from e
    except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError, struct.error, ...
        raise ImageDecodeError(path, _reason_of(e), _detail(e)) from e


def _has_image_signature(path: str) -> bool:
    """Whether the file starts like one of `IMAGE_FORMATS` (its magic bytes)."""
    try:
        with open(path, "rb") as f:
            prefix = f.read(16)
    except OSError:
        return False
    for name in IMAGE_FORMATS:
        accept = Image.OPEN.get(name, (None, None))[1]
        try:
            if accept is not None and accept(prefix) is True:
                return True
        except Exception:  # Some checks unpack more bytes than a tiny file has.
            continue
    return False


def _detail(error: BaseException) -> str:
    if isinstance(error, UnidentifiedImageError):  # Its message only repeats the path.
        return "not " + ", ".join(_FORMAT_NAMES[:-1]) + " or " + _FORMAT_NAMES[-1]
    return " ".join(str(error).split())[:200] or type(error).__name__


def read_image(path: str, channels: int, size: int | None = None) -> np.ndarray:
    """Reads an image file as uint8 [H, W, channels], the shorter side resized to `size`.

    Args:
      path: an image file of `IMAGE_FORMATS`.
      channels: 1 (grey) or 3 (RGB); see the module doc for the conversions.
      size: the shorter side after resizing (None: keep the file's size).

    Raises:
      ImageDecodeError: the file cannot be used (`reason` in `SKIP_REASONS`).
      ValueError: `channels` is not 1 or 3.
    """
    check_channels(channels)
    image = open_image(path, size)
    try:
        image = to_mode(image, channels)
        if size is not None:
            image = resize_shorter_side(image, size)
    except Exception as e:  # A mode Pillow cannot convert, ...: skipped, never a crash.
        raise ImageDecodeError(path, _reason_of(e), _detail(e)) from e
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array  # [H, W, channels]
