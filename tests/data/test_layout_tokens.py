"""layout_tokens: the paper's vocabulary (92 tokens for 30 objects with crop), worked token ids,
padding, round trips within the quantisation error, errors."""

from __future__ import annotations

import numpy as np
import pytest

from ldm_jax.data import datasets, layout_tokens
from ldm_jax.data.layout_tokens import LayoutVocab


def test_paper_vocabulary():
    vocab = LayoutVocab(num_classes=601, max_objects=30, vocab_size=8192, encode_crop=True)
    assert (vocab.grid, vocab.none, vocab.length) == (90, 8191, 92)
    assert vocab.max_error == pytest.approx(0.5 / 89)
    square = LayoutVocab(num_classes=10, max_objects=4, vocab_size=1025)
    assert square.grid == 32 and square.grid**2 == square.none  # Points stay below padding.


def test_worked_example():
    vocab = LayoutVocab(num_classes=601, max_objects=3, vocab_size=8192, encode_crop=True)
    classes = np.array([[7, 600, 0]])
    boxes = np.array([[[0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 1.0, 1.0], [0.1, 0.1, 0.2, 0.2]]])
    tokens = layout_tokens.encode(classes, boxes, np.array([2]), vocab)
    # 0.25 * 89 = 22.25 -> 22; 0.5 * 89 = 44.5 -> 44 (half to even); 0.75 * 89 = 66.75 -> 67.
    expected = [7, 44 * 90 + 22, 89 * 90 + 67, 600, 0, 89 * 90 + 89, 8191, 8191, 8191]
    np.testing.assert_array_equal(tokens, [expected + [0, 89 * 90 + 89]])  # + the full crop
    assert tokens.dtype == np.int32


def test_round_trip_within_quantisation_error():
    rng = np.random.default_rng(0)
    vocab = LayoutVocab(num_classes=10, max_objects=6, vocab_size=1025)
    corners = np.sort(rng.uniform(size=(64, 6, 2, 2)), axis=2)  # [B, M, (lo, hi), (x, y)]
    boxes = corners.reshape(64, 6, 4)  # (x0, y0, x1, y1)
    classes = rng.integers(0, 10, (64, 6))
    count = rng.integers(0, 7, 64)
    tokens = layout_tokens.encode(classes, boxes, count, vocab)
    assert tokens.shape == (64, 18) and tokens.min() >= 0 and tokens.max() < vocab.vocab_size
    got_classes, got_boxes, got_count = layout_tokens.decode(tokens, vocab)
    np.testing.assert_array_equal(got_count, count)
    for b in range(64):
        n = count[b]
        np.testing.assert_array_equal(got_classes[b, :n], classes[b, :n])
        np.testing.assert_array_less(
            np.abs(got_boxes[b, :n] - boxes[b, :n]), vocab.max_error + 1e-6
        )
        assert np.all(got_classes[b, n:] == 10) and np.all(got_boxes[b, n:] == 0)
        assert np.all(tokens[b, 3 * n :] == vocab.none)


def test_fashion_layouts_round_trip_and_extra_objects_are_dropped():
    source = datasets.get_data_source("fashion_mnist_layout", "train[:32]", image_size=32)
    examples = source.__getitems__(range(32))
    classes = np.stack([e["classes"] for e in examples])  # [32, 4]
    boxes = np.stack([e["boxes"] for e in examples])  # [32, 4, 4]
    count = np.array([e["num_objects"] for e in examples])
    vocab = LayoutVocab(num_classes=10, max_objects=4, vocab_size=1025)
    got = layout_tokens.decode(layout_tokens.encode(classes, boxes, count, vocab), vocab)
    np.testing.assert_array_equal(got[0], classes)  # Padding class 10 both ways.
    np.testing.assert_array_equal(got[2], count)
    assert np.abs(got[1] - boxes).max() <= vocab.max_error + 1e-6
    two = LayoutVocab(num_classes=10, max_objects=2, vocab_size=1025)
    kept = layout_tokens.decode(layout_tokens.encode(classes, boxes, count, two), two)
    np.testing.assert_array_equal(kept[2], np.minimum(count, 2))
    np.testing.assert_array_equal(
        kept[0], np.where(np.arange(2) < kept[2][:, None], classes[:, :2], 10)
    )


def test_errors():
    vocab = LayoutVocab(num_classes=10, max_objects=2, vocab_size=1025)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        layout_tokens.encode(np.array([[10, 0]]), np.zeros((1, 2, 4)), np.array([1]), vocab)
    # The padding class after num_objects is ignored.
    layout_tokens.encode(np.array([[3, 10]]), np.zeros((1, 2, 4)), np.array([1]), vocab)
    with pytest.raises(ValueError, match="vocab_size >= 11"):
        LayoutVocab(num_classes=10, max_objects=2, vocab_size=10)
