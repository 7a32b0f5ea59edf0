"""Layout canvases (`layout_canvas`) and the fashion_mnist_layout dataset: boxes inside the
canvas and tight around their item's pixels, classes, overlap, determinism, splits, registry."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from ldm_jax.data import datasets, fashion_mnist_layout, layout_canvas, pipeline


def _coded_pool() -> tuple[np.ndarray, np.ndarray]:
    """Ten 28x28 items; item c is a filled disc of value 20 * (c + 1): its class is its ink."""
    yy, xx = np.mgrid[:28, :28]
    disc = (yy - 13.5) ** 2 + (xx - 13.5) ** 2 < 11**2  # [28, 28]
    items = np.stack([disc * 20 * (c + 1) for c in range(10)]).astype(np.uint8)[..., None]
    return items, np.arange(10)


def _pixel_boxes(boxes: np.ndarray, size: int) -> np.ndarray:
    """float [M, 4] (x0, y0, x1, y1) -> int [M, 4] pixel edges (exact: size * k / size)."""
    pixels = boxes * size
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-4)
    return np.round(pixels).astype(int)


@pytest.mark.parametrize("size", [32, 64])
def test_boxes_are_tight_and_hold_their_items(size):
    items, labels = _coded_pool()
    for i in range(40):
        rng = np.random.default_rng([7, i])
        layout = layout_canvas.compose(items, labels, rng, canvas_size=size, pad_class=10)
        image, n = layout.image[..., 0], layout.num_objects
        assert layout.image.shape == (size, size, 1) and layout.image.dtype == np.uint8
        assert layout.boxes.shape == (4, 4) and layout.boxes.dtype == np.float32
        assert 1 <= n <= 4 and np.all(layout.classes[n:] == 10) and np.all(layout.boxes[n:] == 0)
        covered = np.zeros((size, size), bool)
        pixel_boxes = _pixel_boxes(layout.boxes[:n], size)
        for (x0, y0, x1, y1), c in zip(pixel_boxes, layout.classes[:n], strict=True):
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            inside = image[y0:y1, x0:x1]
            # Tight: ink touches all four edges of the box.
            assert inside[0].any() and inside[-1].any()
            assert inside[:, 0].any() and inside[:, -1].any()
            assert inside.max() == 20 * (c + 1)  # The class's own item is drawn there.
            assert not covered[y0:y1, x0:x1].any()  # Boxes never overlap by default.
            covered[y0:y1, x0:x1] = True
        assert not image[~covered].any()  # Every inked pixel lies inside a box.


def test_limited_overlap_is_respected():
    items, labels = _coded_pool()
    worst = 0.0
    for i in range(60):
        layout = layout_canvas.compose(
            items, labels, np.random.default_rng(i), canvas_size=32, max_overlap=0.25
        )
        boxes = _pixel_boxes(layout.boxes[: layout.num_objects], 32)[:, [1, 0, 3, 2]]
        for a in range(len(boxes)):
            for b in range(a):
                worst = max(worst, layout_canvas.overlap_fraction(boxes[a], boxes[b]))
    assert 0.0 < worst <= 0.25


def test_overlap_fraction_closed_form():
    a, b = np.array([0, 0, 4, 4]), np.array([2, 2, 4, 8])  # (top, left, bottom, right)
    assert layout_canvas.overlap_fraction(a, b) == pytest.approx(4 / 12)
    assert layout_canvas.overlap_fraction(a, np.array([4, 0, 6, 4])) == 0.0
    with pytest.raises(ValueError, match="min_objects"):
        layout_canvas.compose(
            *_coded_pool(), np.random.default_rng(0), canvas_size=32, max_objects=0
        )


def test_dataset_examples_are_deterministic_per_index():
    a = datasets.get_data_source("fashion_mnist_layout", "train", image_size=32)
    b = fashion_mnist_layout.FashionMnistLayout("train", canvas_size=32)
    sliced = datasets.get_data_source("fashion_mnist_layout", "train[100:110]", image_size=32)
    assert len(a) == 60000 and len(sliced) == 10
    for i in (0, 1, 105, 59999):
        x, y = a[i], b[i]
        for key in ("image", "boxes", "classes"):
            np.testing.assert_array_equal(x[key], y[key])
        assert (x["num_objects"], x["caption"]) == (y["num_objects"], y["caption"])
    np.testing.assert_array_equal(sliced[5]["image"], a[105]["image"])
    restored = pickle.loads(pickle.dumps(a))  # grain workers receive a pickled source
    np.testing.assert_array_equal(restored[3]["boxes"], a[3]["boxes"])
    test = datasets.get_data_source("fashion_mnist_layout", "test", image_size=32)
    assert len(test) == 10000 and not np.array_equal(test[0]["image"], a[0]["image"])


def test_dataset_content_and_counts():
    source = datasets.get_data_source("fashion_mnist_layout", "test", image_size=64)
    examples = source.__getitems__(range(400))
    counts = np.bincount([e["num_objects"] for e in examples], minlength=5)
    assert counts[0] == 0 and np.all(counts[1:] > 20), counts
    names = [n.lower() for n in fashion_mnist_layout.fashion_mnist_idx.CLASS_NAMES]
    for e in examples[:50]:
        n = e["num_objects"]
        assert e["image"].shape == (64, 64, 1) and e["classes"].dtype == np.int32
        assert np.all((0 <= e["classes"][:n]) & (e["classes"][:n] < 10))
        assert np.all(e["classes"][n:] == fashion_mnist_layout.PAD_CLASS)
        assert e["caption"] == ", ".join(names[c] for c in e["classes"][:n])
        boxes = e["boxes"][:n]
        assert np.all((0 <= boxes) & (boxes <= 1))
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        covered = np.zeros((64, 64), bool)
        for x0, y0, x1, y1 in _pixel_boxes(boxes, 64):
            covered[y0:y1, x0:x1] = True
        assert not e["image"][..., 0][~covered].any()
    assert datasets.num_object_classes("fashion_mnist_layout") == 10
    assert datasets.num_classes("fashion_mnist_layout") is None


def test_splits_draw_items_from_their_own_pool(monkeypatch):
    pools = {"train": 100, "test": 200}  # Ink value of every item of a split's pool.

    def fake_items(split, directory):
        del directory
        items = np.zeros((5, 28, 28, 1), np.uint8)
        items[:, 4:24, 4:24] = pools[split]
        return items, np.arange(5)

    monkeypatch.setattr(fashion_mnist_layout, "_items", fake_items)
    for split, value in pools.items():
        for i in range(10):
            image = fashion_mnist_layout.make_example(0, split, i, 32)["image"]
            assert image.max() == value, (split, i)


def test_registry_errors_and_loader(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="Invalid split"):
        datasets.get_data_source("fashion_mnist_layout", "validation")
    with pytest.raises(ValueError, match="at least 16 px"):
        datasets.get_data_source("fashion_mnist_layout", "train", image_size=8)
    with pytest.raises(ValueError, match="not a tfds builder"):
        datasets.get_builder("fashion_mnist_layout")
    source = datasets.get_data_source("fashion_mnist_layout", "train[:64]", image_size=32)
    batch = next(pipeline.make_train_loader(source, batch_size=8, image_size=32, seed=0))
    assert batch["image"].shape == (8, 32, 32, 1) and batch["caption"].shape == (8,)
    monkeypatch.setenv("LDM_JAX_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        datasets.get_data_source("fashion_mnist_layout", "train")
