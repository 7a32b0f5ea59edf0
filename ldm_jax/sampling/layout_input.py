"""The `--layout` of `python -m ldm_jax.sample --task layout`: a JSON file or a test canvas.

A JSON layout is a list of objects, each {"class": id or class name, "box": [x0, y0, x1, y1]}
with normalised corners (0 <= x0 < x1 <= 1, likewise y; (0, 0) is the top-left corner), e.g.

    [{"class": "sneaker", "box": [0.05, 0.05, 0.45, 0.45]}, {"class": 8, "box": [0.5, 0.5, 1, 1]}]

Class names match the dataset's names case-insensitively ("Ankle boot", "t-shirt/top").
`test:INDEX` takes the layout of canvas INDEX of the dataset's test split instead. Every input
error is a `SampleInputError` naming `--layout`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import ml_collections
import numpy as np

from ldm_jax.config import builders
from ldm_jax.data import fashion_mnist_idx, fashion_mnist_layout, layout_tokens
from ldm_jax.sampling.request import SampleInputError

TEST_PREFIX = "test:"
FLAG = "--layout"
# Object class names of the layout datasets (by class id), for the "class" names of a layout.
CLASS_NAMES = {fashion_mnist_layout.NAME: fashion_mnist_idx.CLASS_NAMES}


class Layout(NamedTuple):
    """One layout: classes int32 [K] and boxes float32 [K, 4] (x0, y0, x1, y1) of K objects."""

    classes: np.ndarray
    boxes: np.ndarray

    @property
    def num_objects(self) -> int:
        return len(self.classes)

    def batch(self, num: int, max_objects: int, pad_class: int) -> tuple[np.ndarray, ...]:
        """`num` copies padded to `max_objects`: (classes int32 [num, M], boxes float32
        [num, M, 4], num_objects int32 [num]), as `layout_tokens.encode` takes them."""
        classes = np.full((num, max_objects), pad_class, np.int32)
        boxes = np.zeros((num, max_objects, 4), np.float32)
        classes[:, : self.num_objects] = self.classes
        boxes[:, : self.num_objects] = self.boxes
        return classes, boxes, np.full((num,), self.num_objects, np.int32)

    def to_json(self, class_names: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The layout as the JSON objects `parse_objects` reads (names where known)."""
        out = []
        for c, box in zip(self.classes.tolist(), self.boxes.tolist(), strict=True):
            name = class_names[c] if c < len(class_names) else c
            out.append({"class": name, "box": [round(v, 4) for v in box]})
        return out


def _error(message: str) -> SampleInputError:
    return SampleInputError(f"{FLAG}: {message}")


def _class_id(value: Any, num_classes: int, class_names: Sequence[str], i: int) -> int:
    """An object's class: an id in [0, num_classes) or one of `class_names`."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _error(f'object {i}: "class" must be an id or a class name, got {value!r}.')
    if isinstance(value, int):
        if not 0 <= value < num_classes:
            raise _error(f"object {i}: class {value} is not in [0, {num_classes}).")
        return value
    lowered = [n.lower() for n in class_names]
    if value.strip().lower() not in lowered:
        known = ", ".join(repr(n) for n in class_names) or "none; give ids"
        raise _error(f"object {i}: unknown class name {value!r} (known: {known}).")
    return lowered.index(value.strip().lower())


def _box(value: Any, i: int) -> list[float]:
    """An object's box [x0, y0, x1, y1], checked to lie in [0, 1] with x0 < x1 and y0 < y1."""
    numbers = isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    )
    if not numbers or len(value) != 4:
        raise _error(f'object {i}: "box" must be 4 numbers [x0, y0, x1, y1], got {value!r}.')
    x0, y0, x1, y1 = (float(v) for v in value)
    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
        raise _error(f"object {i}: box {value} is outside [0, 1] (normalised corners).")
    if x1 <= x0 or y1 <= y0:
        raise _error(f"object {i}: box {value} needs x0 < x1 and y0 < y1.")
    return [x0, y0, x1, y1]


def parse_objects(
    objects: Any, num_classes: int, max_objects: int, class_names: Sequence[str] = ()
) -> Layout:
    """A decoded JSON layout (see the module doc) -> `Layout`.

    Args:
      objects: a list of {"class": int | str, "box": [x0, y0, x1, y1]}.
      num_classes: the model's object classes.
      max_objects: the most objects the model's tokens hold.
      class_names: the dataset's class names, by id (may be empty: ids only).

    Raises:
      SampleInputError: the message names --layout, the object and the fix.
    """
    if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
        raise _error('expected a JSON list of {"class": ..., "box": [x0, y0, x1, y1]} objects.')
    if len(objects) > max_objects:
        raise _error(f"{len(objects)} objects, but this model holds at most {max_objects}.")
    classes, boxes = [], []
    for i, obj in enumerate(objects):
        unknown = sorted(set(obj) - {"class", "box"})
        if unknown or "class" not in obj or "box" not in obj:
            raise _error(f'object {i} must have exactly the keys "class" and "box", got {obj}.')
        classes.append(_class_id(obj["class"], num_classes, class_names, i))
        boxes.append(_box(obj["box"], i))
    return Layout(
        np.asarray(classes, np.int32).reshape(-1),
        np.asarray(boxes, np.float32).reshape(-1, 4),
    )


def read_layout(
    value: str,
    num_classes: int,
    max_objects: int,
    class_names: Sequence[str] = (),
    test_example: Callable[[int], dict[str, Any]] | None = None,
    num_test: int = 0,
) -> Layout:
    """The layout of `--layout VALUE`: a JSON file, or `test:INDEX`.

    Args:
      value: the flag's value.
      num_classes, max_objects, class_names: as `parse_objects`.
      test_example: index -> example of the test split ("classes", "boxes", "num_objects").
      num_test: the test split's size.

    Raises:
      SampleInputError: a missing or malformed file, a bad index, an invalid layout.
    """
    if value.startswith(TEST_PREFIX):
        index = value[len(TEST_PREFIX) :]
        if not index.isdigit() or not 0 <= int(index) < num_test or test_example is None:
            raise _error(f"{value!r}: use test:INDEX with INDEX in [0, {num_test}).")
        example = test_example(int(index))
        k = min(int(example["num_objects"]), max_objects)
        classes = np.asarray(example["classes"], np.int32)[:k]
        return Layout(classes, np.asarray(example["boxes"], np.float32)[:k])
    if not os.path.isfile(value):
        raise _error(f"{value} is not a file (a JSON layout, or test:INDEX).")
    try:
        with open(value, encoding="utf-8") as f:
            objects = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _error(f"{value} is not valid JSON ({e}).") from None
    return parse_objects(objects, num_classes, max_objects, class_names)


def layout_condition(
    config: ml_collections.ConfigDict, value: str, num: int
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """cond, uncond and the JSON summary of `--layout VALUE` for a layout model's config.

    Returns:
      (token ids int32 [num, L] of the layout, the empty layout's [1, L], the layout's objects).
    """
    vocab = builders.layout_vocab(config)
    names = CLASS_NAMES.get(config.data.name, ())
    source = None
    if value.startswith(TEST_PREFIX):
        source = builders.build_data_source(config, "test")
    layout = read_layout(
        value,
        vocab.num_classes,
        vocab.max_objects,
        names,
        test_example=None if source is None else source.__getitem__,
        num_test=0 if source is None else len(source),
    )
    classes, boxes, num_objects = layout.batch(num, vocab.max_objects, vocab.num_classes)
    cond = layout_tokens.encode(classes, boxes, num_objects, vocab)  # [num, L]
    return cond, builders.null_layout(vocab), layout.to_json(names)
