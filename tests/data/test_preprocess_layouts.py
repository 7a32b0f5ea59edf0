"""Layouts pass through preprocessing unchanged (boxes, classes, counts), for a batch and for a
whole split loaded into memory; datasets without boxes get no layout keys."""

from __future__ import annotations

import numpy as np

from ldm_jax.data import fashion_mnist_layout, pipeline
from ldm_jax.data.preprocess import preprocess_batch


def _examples(n: int, canvas: int) -> list[dict]:
    source = fashion_mnist_layout.FashionMnistLayout("test[:8]", canvas_size=canvas)
    return [source[i] for i in range(n)]


def test_batch_passes_layouts_through_resized_or_not():
    for canvas in (32, 64):  # 64 -> 32 is downscaled: normalised boxes still hold
        examples = _examples(5, canvas)
        out = preprocess_batch(examples, 32, channels=1)
        assert out["image"].shape == (5, 32, 32, 1)
        assert out["boxes"].dtype == np.float32 and out["boxes"].shape == (5, 4, 4)
        assert out["classes"].dtype == np.int32 and out["classes"].shape == (5, 4)
        assert out["num_objects"].dtype == np.int32 and out["num_objects"].shape == (5,)
        np.testing.assert_array_equal(out["boxes"], np.stack([e["boxes"] for e in examples]))
        np.testing.assert_array_equal(out["classes"], np.stack([e["classes"] for e in examples]))
        np.testing.assert_array_equal(out["num_objects"], [e["num_objects"] for e in examples])


def test_split_dict_keeps_layouts_and_plain_data_has_none():
    source = fashion_mnist_layout.FashionMnistLayout("test[:6]", canvas_size=32)
    split = pipeline.load_split_dict(source, 32, 1, chunk_size=4)  # two chunks
    np.testing.assert_array_equal(split["boxes"], np.stack([source[i]["boxes"] for i in range(6)]))
    np.testing.assert_array_equal(
        split["num_objects"], [source[i]["num_objects"] for i in range(6)]
    )
    plain = [{"image": np.zeros((28, 28, 1), np.uint8), "label": 3}]
    assert set(preprocess_batch(plain, 32)) == {"image", "label"}
