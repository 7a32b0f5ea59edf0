"""Layout -> token ids for the paper's layout-to-image model (boxes to the BERT-like transformer).

The vocabulary is the one of the paper's layout model (taming-transformers' object-and-box
conditional builder, used by the released ``layout2img-openimages256``: ``vocab_size=8192``,
30 objects, crop tokens, 92 tokens): one shared set of ``vocab_size`` ids whose meaning depends
on the position in the sequence.

* **Grid.** Coordinates are quantised on G x G points, G = isqrt(vocab_size - 1) (90 for 8192):
  x -> qx = round(x * (G - 1)), likewise y, and a point is the single id qy * G + qx in
  [0, G * G). Decoding gives q / (G - 1), so a coordinate in [0, 1] comes back within
  0.5 / (G - 1).
* **Ids.** A class token is the object's class id itself, in [0, num_classes); a point token is a
  grid id as above; the last id, ``vocab_size - 1`` (`LayoutVocab.none`), is padding. Class and
  point ids overlap: the position tells them apart (the transformer has position embeddings).
  G * G <= vocab_size - 1 keeps padding distinct from every point.
* **Sequence.** Per object a triple (class, top-left point, bottom-right point), objects in the
  given order, then (none, none, none) triples up to `max_objects`; with `encode_crop`, two more
  point tokens for the crop window of the image (the full canvas (0, 0, 1, 1) unless given).
  Length 3 * max_objects (+ 2): 92 for the paper's 30 objects with crop.

Rounding is half to even, as Python's `round` in the paper's builder.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

FULL_CROP = (0.0, 0.0, 1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class LayoutVocab:
    """The token layout (see the module doc).

    Attributes:
      num_classes: object classes, ids [0, num_classes).
      max_objects: objects per sequence; more are dropped, fewer are padded.
      vocab_size: ids in the vocabulary (the transformer's embedding rows).
      encode_crop: append the crop window's two point tokens.
    """

    num_classes: int
    max_objects: int
    vocab_size: int = 8192
    encode_crop: bool = False

    def __post_init__(self):
        if self.num_classes < 1 or self.max_objects < 1:
            raise ValueError(
                f"LayoutVocab needs num_classes >= 1 and max_objects >= 1, got "
                f"{self.num_classes}, {self.max_objects}."
            )
        if self.grid < 2 or self.num_classes > self.none:
            raise ValueError(
                f"LayoutVocab: vocab_size={self.vocab_size} leaves no room for "
                f"{self.num_classes} classes and a grid of at least 2 x 2 points plus padding; "
                f"use vocab_size >= {max(self.num_classes + 1, 5)}."
            )

    @property
    def grid(self) -> int:
        """G: grid points per axis."""
        return math.isqrt(self.vocab_size - 1)

    @property
    def none(self) -> int:
        """The padding id."""
        return self.vocab_size - 1

    @property
    def length(self) -> int:
        """Tokens per layout."""
        return 3 * self.max_objects + (2 if self.encode_crop else 0)

    @property
    def max_error(self) -> float:
        """The largest quantisation error of a coordinate in [0, 1]."""
        return 0.5 / (self.grid - 1)


def point_tokens(x: np.ndarray, y: np.ndarray, vocab: LayoutVocab) -> np.ndarray:
    """float [...] coordinates in [0, 1] (clipped) -> int32 [...] point ids."""
    g = vocab.grid
    qx = np.rint(np.clip(x, 0.0, 1.0) * (g - 1)).astype(np.int32)
    qy = np.rint(np.clip(y, 0.0, 1.0) * (g - 1)).astype(np.int32)
    return qy * g + qx


def token_points(tokens: np.ndarray, vocab: LayoutVocab) -> tuple[np.ndarray, np.ndarray]:
    """int [...] point ids -> (x, y) float32 [...] in [0, 1]."""
    g = vocab.grid
    tokens = np.asarray(tokens)
    return (tokens % g / (g - 1)).astype(np.float32), (tokens // g / (g - 1)).astype(np.float32)


def encode(
    classes: np.ndarray,
    boxes: np.ndarray,
    num_objects: np.ndarray,
    vocab: LayoutVocab,
    crop: tuple[float, float, float, float] = FULL_CROP,
) -> np.ndarray:
    """Token ids of a batch of layouts (see the module doc).

    Args:
      classes: int [B, M] class ids; entries at or after `num_objects` are ignored.
      boxes: float [B, M, 4] normalised (x0, y0, x1, y1).
      num_objects: int [B] objects per layout.
      vocab: the token layout.
      crop: the crop window (x0, y0, x1, y1) of every image, used when `vocab.encode_crop`.

    Returns:
      int32 [B, vocab.length].

    Raises:
      ValueError: a class id of a counted object is outside [0, num_classes).
    """
    classes = np.asarray(classes, np.int64)
    boxes = np.asarray(boxes, np.float64)
    b, m = classes.shape
    k = min(m, vocab.max_objects)
    valid = np.arange(k)[None] < np.minimum(np.asarray(num_objects), k)[:, None]  # [B, k]
    cls = classes[:, :k]
    if np.any(valid & ((cls < 0) | (cls >= vocab.num_classes))):
        raise ValueError(f"Layout classes must lie in [0, {vocab.num_classes}), got {cls[valid]}.")
    top_left = point_tokens(boxes[:, :k, 0], boxes[:, :k, 1], vocab)  # [B, k]
    bottom_right = point_tokens(boxes[:, :k, 2], boxes[:, :k, 3], vocab)  # [B, k]
    triples = np.stack([cls, top_left, bottom_right], axis=-1)  # [B, k, 3]
    triples = np.where(valid[..., None], triples, vocab.none)
    tokens = np.full((b, vocab.max_objects, 3), vocab.none, np.int32)
    tokens[:, :k] = triples
    tokens = tokens.reshape(b, 3 * vocab.max_objects)
    if vocab.encode_crop:
        corners = point_tokens(np.array(crop[0::2]), np.array(crop[1::2]), vocab)  # [2]
        tokens = np.concatenate([tokens, np.broadcast_to(corners, (b, 2))], axis=1)
    return tokens.astype(np.int32)


def decode(
    tokens: np.ndarray, vocab: LayoutVocab, pad_class: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inverse of `encode`, up to quantisation: objects whose class token is not padding.

    Args:
      tokens: int [B, vocab.length].
      vocab: the token layout.
      pad_class: the class of padding slots (default `vocab.num_classes`).

    Returns:
      (classes int32 [B, max_objects], boxes float32 [B, max_objects, 4] (zeros for padding),
      num_objects int32 [B]), objects first, in sequence order.
    """
    tokens = np.asarray(tokens)
    pad_class = vocab.num_classes if pad_class is None else pad_class
    triples = tokens[:, : 3 * vocab.max_objects].reshape(len(tokens), vocab.max_objects, 3)
    valid = triples[..., 0] != vocab.none  # [B, M]
    order = np.argsort(~valid, axis=1, kind="stable")  # Objects first, order kept.
    triples = np.take_along_axis(triples, order[..., None], axis=1)
    valid = np.take_along_axis(valid, order, axis=1)
    x0, y0 = token_points(triples[..., 1], vocab)
    x1, y1 = token_points(triples[..., 2], vocab)
    boxes = np.where(valid[..., None], np.stack([x0, y0, x1, y1], axis=-1), 0.0)
    classes = np.where(valid, triples[..., 0], pad_class)
    return classes.astype(np.int32), boxes.astype(np.float32), valid.sum(1).astype(np.int32)
