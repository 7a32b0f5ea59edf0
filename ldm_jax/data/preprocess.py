"""Example preprocessing: uint8 images (and their labels, captions, segmentation maps) -> arrays.

Images go from uint8 [h, w, c] to float32 [H, W, C] in [-1, 1] (NHWC). Non-square images are
cropped to a square of side min(h, w); smaller squares are padded centrally with -1 (black),
larger ones are downscaled with Pillow (bicubic, antialiased).

Crops: "center" (the default, evaluation) or "random" (training): a random square of side min(h, w)
along the longer side and a horizontal flip with probability 1/2, as the paper's loaders do after
resizing the shorter side (the image folder source stores images resized so).

Segmentation maps (uint8 [h, w] class ids) are cropped and flipped like their image, resized with
nearest neighbour and padded with 0.

Layouts ("boxes" float32 [M, 4] normalised (x0, y0, x1, y1), "classes" int32 [M], "num_objects")
pass through unchanged: they are right for square images under the "center" crop (resizing keeps
normalised coordinates); a random crop or flip would move the image but not its boxes, so layout
configs are refused with it (`config/validation.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

PAD_VALUE = -1.0  # Black in [-1, 1].
CROPS = ("center", "random")


def _to_nhwc_uint8(images: np.ndarray) -> np.ndarray:
    """Adds a channel axis to [..., h, w] grey images if missing."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"Expected uint8 images, got {images.dtype}.")
    return images[..., None] if images.ndim == 2 else images


def _resize(square: np.ndarray, size: int) -> np.ndarray:
    """Downscales a uint8 [s, s, C] image to [size, size, C], each channel with Pillow."""
    channels = [
        np.asarray(Image.fromarray(square[..., c]).resize((size, size), Image.Resampling.BICUBIC))
        for c in range(square.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def preprocess_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 [B, h, w, C] -> float32 [B, image_size, image_size, C] in [-1, 1] (see module doc)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"Expected uint8 [B, h, w, C] images, got {images.dtype} {images.shape}.")
    _, h, w, _ = images.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    images = images[:, top : top + s, left : left + s]  # [B, s, s, C]
    if s > image_size:
        images = np.stack([_resize(im, image_size) for im in images])
    x = images.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0)  # [B, s', s', C]
    if s < image_size:
        before = (image_size - s) // 2
        after = image_size - s - before
        x = np.pad(x, ((0, 0), (before, after), (before, after), (0, 0)), constant_values=PAD_VALUE)
    return x  # [B, image_size, image_size, C]


def preprocess(example: dict[str, Any], image_size: int) -> dict[str, np.ndarray]:
    """Turns one example into model inputs.

    Args:
      example: {"image": uint8 [h, w, C] (or [h, w]), "label": int (optional)}.
      image_size: output side length.

    Returns:
      {"image": float32 [image_size, image_size, C] in [-1, 1], "label": int32 scalar} (no
      "label" key if the example has none).
    """
    batch = preprocess_examples([example], image_size)
    return {k: v[0] for k, v in batch.items()}


def preprocess_examples(
    examples: Sequence[dict[str, Any]],
    image_size: int,
) -> dict[str, np.ndarray]:
    """Preprocesses and stacks examples (vectorised when all images share a shape).

    Returns:
      {"image": float32 [B, image_size, image_size, C], "label": int32 [B]} ("label" only if the
      examples have one).
    """
    raw = [_to_nhwc_uint8(e["image"]) for e in examples]
    if len({im.shape for im in raw}) == 1:
        images = preprocess_images(np.stack(raw), image_size)
    else:  # Variable-size images (e.g. LSUN): one at a time.
        images = np.stack([preprocess_images(im[None], image_size)[0] for im in raw])
    out = {"image": images}  # [B, H, W, C]
    if "label" in examples[0]:
        out["label"] = np.asarray([e["label"] for e in examples], dtype=np.int32)  # [B]
    return out


def check_crop(crop: str) -> str:
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}.")
    return crop


def convert_channels(image: np.ndarray, channels: int | None) -> np.ndarray:
    """uint8 [h, w, c] -> [h, w, channels]: grey repeated, RGB -> Pillow's integer luma, RGBA
    composited over white; unchanged when `channels` is None or already right."""
    c = image.shape[-1]
    if channels is None or c == channels:
        return image
    if c == 4:  # RGBA over white.
        alpha = image[..., 3:].astype(np.uint32)
        rgb = (image[..., :3].astype(np.uint32) * alpha + 255 * (255 - alpha) + 127) // 255
        return convert_channels(rgb.astype(np.uint8), channels)
    if c == 1 and channels == 3:
        return np.repeat(image, 3, axis=-1)
    if c == 3 and channels == 1:  # Pillow's "L": (19595 R + 38470 G + 7471 B + 2^15) >> 16.
        rgb = image.astype(np.uint32)
        grey = (19595 * rgb[..., 0] + 38470 * rgb[..., 1] + 7471 * rgb[..., 2] + 0x8000) >> 16
        return grey.astype(np.uint8)[..., None]
    raise ValueError(f"Cannot convert {c}-channel images to {channels} channels.")


def _square_window(h: int, w: int, rng: np.random.Generator | None) -> tuple[int, int, int, bool]:
    """(top, left, side, flip) of the square crop: centred without rng, random (+flip) with it."""
    s = min(h, w)
    if rng is None:
        return (h - s) // 2, (w - s) // 2, s, False
    return int(rng.integers(h - s + 1)), int(rng.integers(w - s + 1)), s, bool(rng.random() < 0.5)


def _segmentation(seg: np.ndarray, window: tuple[int, int, int, bool], size: int) -> np.ndarray:
    """uint8 [h, w] class ids -> int32 [size, size]: cropped, flipped, nearest-resized or padded."""
    top, left, s, flip = window
    seg = np.asarray(seg, np.uint8)[top : top + s, left : left + s]  # [s, s]
    if flip:
        seg = seg[:, ::-1]
    if s > size:
        seg = np.asarray(
            Image.fromarray(np.ascontiguousarray(seg)).resize(
                (size, size), Image.Resampling.NEAREST
            )
        )
    elif s < size:
        before = (size - s) // 2
        seg = np.pad(seg, ((before, size - s - before),) * 2)
    return seg.astype(np.int32)


def preprocess_batch(
    examples: Sequence[dict[str, Any]],
    image_size: int,
    *,
    channels: int | None = None,
    crop: str = "center",
    rngs: Sequence[np.random.Generator] | None = None,
) -> dict[str, np.ndarray]:
    """Preprocesses and stacks examples into every key the dataset has (see module doc).

    Args:
      examples: dicts with "image" uint8 [h, w, C] and optionally "label", "caption",
        "segmentation" uint8 [h, w].
      image_size: output side length.
      channels: output channels (None: as stored); see `convert_channels`.
      crop: "center", or "random" with one generator per example in `rngs`.

    Returns:
      {"image": float32 [B, S, S, C'], "label": int32 [B] (zeros if none), "caption": object [B],
      "segmentation": int32 [B, S, S], and "boxes" float32 [B, M, 4], "classes" int32 [B, M],
      "num_objects" int32 [B] when the examples have them}.
    """
    if check_crop(crop) == "random" and (rngs is None or len(rngs) != len(examples)):
        raise ValueError("crop='random' needs one numpy Generator per example (rngs).")
    raw = [convert_channels(_to_nhwc_uint8(e["image"]), channels) for e in examples]
    if crop == "center":
        windows = [_square_window(*im.shape[:2], None) for im in raw]
        out = preprocess_examples([{"image": im} for im in raw], image_size)
    else:
        windows = [_square_window(*im.shape[:2], rng) for im, rng in zip(raw, rngs, strict=True)]
        squares = []
        for im, (top, left, side, flip) in zip(raw, windows, strict=True):
            square = im[top : top + side, left : left + side]
            squares.append(square[:, ::-1] if flip else square)
        out = {"image": np.stack([preprocess_images(sq[None], image_size)[0] for sq in squares])}
    first = examples[0]
    out["label"] = np.asarray(
        [e["label"] for e in examples] if "label" in first else np.zeros(len(examples)), np.int32
    )  # [B]
    if "caption" in first:
        captions = [e["caption"] for e in examples]
        out["caption"] = np.asarray(
            [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in captions], object
        )  # [B]
    if "segmentation" in first:
        out["segmentation"] = np.stack(
            [
                _segmentation(e["segmentation"], w, image_size)
                for e, w in zip(examples, windows, strict=True)
            ]
        )  # [B, S, S]
    if "boxes" in first:
        out.update(_layouts(examples))
    return out


def _layouts(examples: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The examples' layouts stacked, unchanged (see the module doc)."""
    return {
        "boxes": np.stack([np.asarray(e["boxes"], np.float32) for e in examples]),  # [B, M, 4]
        "classes": np.stack([np.asarray(e["classes"], np.int32) for e in examples]),  # [B, M]
        "num_objects": np.asarray([e["num_objects"] for e in examples], np.int32),  # [B]
    }
