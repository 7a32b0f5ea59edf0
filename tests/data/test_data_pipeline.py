"""Preprocessing and the grain loader: values, determinism, coverage, sharding, resumption."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ldm_jax.data import datasets, fashion_mnist_idx, pipeline


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint((x + 1.0) * 127.5).astype(np.uint8)


def _index_source(n: int) -> list[dict]:
    """Examples whose 4x4 image encodes their index (pixels 0 and 1: high and low byte)."""
    out = []
    for i in range(n):
        image = np.zeros((4, 4, 1), np.uint8)
        image[0, 0, 0], image[0, 1, 0] = divmod(i, 256)
        out.append({"image": image, "label": i % 10})
    return out


def _indices(batch: dict) -> np.ndarray:
    pixels = _to_uint8(batch["image"]).astype(np.int64)  # [B, 4, 4, 1]
    return pixels[:, 0, 0, 0] * 256 + pixels[:, 0, 1, 0]


def test_preprocess_pads_28_to_32_with_black():
    image = np.arange(28 * 28, dtype=np.int64).reshape(28, 28, 1) % 256
    out = pipeline.preprocess({"image": image.astype(np.uint8), "label": 7}, 32)
    x = out["image"]
    assert x.shape == (32, 32, 1) and x.dtype == np.float32
    assert out["label"] == 7 and out["label"].dtype == np.int32
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert np.all(x[border] == -1.0)
    np.testing.assert_allclose(x[2:30, 2:30], image / 127.5 - 1.0, atol=1e-6)
    assert x.min() == -1.0 and x.max() == 1.0  # 0 -> -1, 255 -> 1.


def test_preprocess_grey_2d_same_size_and_downscale():
    grey = np.full((28, 28), 255, np.uint8)
    assert pipeline.preprocess({"image": grey}, 28)["image"].shape == (28, 28, 1)
    assert "label" not in pipeline.preprocess({"image": grey}, 28)
    rgb = np.zeros((80, 64, 3), np.uint8)
    rgb[..., 1] = 255
    rgb[:8] = 17  # Cropped away by the central square crop (rows 8..72).
    x = pipeline.preprocess({"image": rgb}, 16)["image"]
    assert x.shape == (16, 16, 3)
    np.testing.assert_allclose(x[..., 0], -1.0, atol=1e-6)
    np.testing.assert_allclose(x[..., 1], 1.0, atol=1e-6)


def test_preprocess_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        pipeline.preprocess({"image": np.zeros((28, 28, 1), np.float32)}, 32)


def test_loader_batches_and_image_label_correspondence(train_source, raw_train):
    images, labels = raw_train
    labels_by_image = {}
    for im, lb in zip(images, labels, strict=True):
        labels_by_image.setdefault(im.tobytes(), set()).add(int(lb))
    loader = pipeline.make_train_loader(train_source, batch_size=64, image_size=32, seed=0)
    for _ in range(3):
        batch = next(loader)
        assert batch["image"].shape == (64, 32, 32, 1) and batch["image"].dtype == np.float32
        assert batch["label"].shape == (64,) and batch["label"].dtype == np.int32
        assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
        for x, lb in zip(batch["image"], batch["label"], strict=True):
            assert int(lb) in labels_by_image[_to_uint8(x[2:30, 2:30, 0]).tobytes()]


def test_loader_is_deterministic_and_seed_dependent(train_source):
    def first(seed, n=3):
        it = pipeline.make_train_loader(train_source, batch_size=32, image_size=32, seed=seed)
        return [next(it) for _ in range(n)]

    a, b, c = first(1), first(1), first(2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_each_epoch_covers_every_example_once_and_reshuffles():
    n, batch_size = 1000, 100
    loader = pipeline.make_train_loader(
        _index_source(n), batch_size=batch_size, image_size=4, seed=5
    )
    epochs = [
        np.concatenate([_indices(next(loader)) for _ in range(n // batch_size)]) for _ in range(2)
    ]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
        assert not np.array_equal(order, np.arange(n))  # Shuffled.
    assert not np.array_equal(epochs[0], epochs[1])  # Reshuffled each epoch.


def test_process_shards_are_slices_of_the_single_process_global_batches():
    n, batch = 1000, 50
    whole = pipeline.make_train_loader(_index_source(n), batch_size=batch, image_size=4, seed=0)
    shards = [
        pipeline.make_train_loader(
            _index_source(n),
            batch_size=batch,
            image_size=4,
            seed=0,
            shard_index=shard,
            shard_count=2,
        )
        for shard in range(2)
    ]
    for _ in range(25):  # More than one epoch.
        parts = [_indices(next(loader)) for loader in shards]
        assert [len(p) for p in parts] == [batch // 2] * 2
        np.testing.assert_array_equal(np.concatenate(parts), _indices(next(whole)))
        assert not set(parts[0]) & set(parts[1])
    with pytest.raises(ValueError, match="shard_index"):
        pipeline.make_train_loader(
            _index_source(10), batch_size=2, image_size=4, seed=0, shard_index=2, shard_count=2
        )
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        pipeline.make_train_loader(
            _index_source(10), batch_size=3, image_size=4, seed=0, shard_index=0, shard_count=2
        )


@pytest.mark.parametrize("num_threads", [0, 1])
def test_iterator_state_resumes_on_the_next_batch(train_source, num_threads):
    def loader():
        return pipeline.make_train_loader(
            train_source, batch_size=16, image_size=32, seed=3, num_threads=num_threads
        )

    reference = loader()
    batches, state = [], None
    for step in range(5):
        batches.append(next(reference))
        if step == 1:
            state = json.loads(json.dumps(reference.get_state()))  # As stored in a checkpoint.
    resumed = loader()
    resumed.set_state(state)
    for expected in batches[2:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], expected["image"])
        np.testing.assert_array_equal(got["label"], expected["label"])


def test_load_split_arrays_matches_raw(tfds_dir):
    images, labels = fashion_mnist_idx.read_idx_arrays("test")
    source = datasets.get_data_source("fashion_mnist", "test", tfds_dir)
    x, y = pipeline.load_split_arrays(source, 32, max_examples=1500, chunk_size=512)
    assert x.shape == (1500, 32, 32, 1) and x.dtype == np.float32
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, labels[:1500])
    np.testing.assert_array_equal(_to_uint8(x[:, 2:30, 2:30, 0]), images[:1500])
    assert np.all(x[:, :2] == -1.0)


def test_fashion_mnist_loader_output_is_pinned(train_source):
    """The quickstart's batches, pinned: order, dtype and values as before the data refactor."""
    import hashlib

    loader = pipeline.make_train_loader(train_source, batch_size=32, image_size=32, seed=0)
    digest = hashlib.sha256()
    for _ in range(2):
        batch = next(loader)
        assert set(batch) == {"image", "label"}
        digest.update(batch["image"].tobytes())
        digest.update(batch["label"].tobytes())
    assert digest.hexdigest() == "1e371a6474db2e6015b62771ef23509091c57fb54ffff65dfb07170def1bca40"


def _column_source(n: int, h: int = 8, w: int = 12) -> list[dict]:
    """Images whose column j holds 20 * j (channel 0), segmentation j, label = index."""
    cols = np.tile(np.arange(w, dtype=np.uint8), (h, 1))  # [h, w]
    image = np.stack([cols * 20, cols, np.zeros_like(cols)], axis=-1)
    return [{"image": image, "segmentation": cols, "label": i} for i in range(n)]


def _columns(batch: dict) -> np.ndarray:
    return batch["segmentation"][:, 0, :]  # [B, S]: the source column of each output column.


def test_random_crop_and_flip_move_image_and_segmentation_together():
    centre = pipeline.load_split_dict(_column_source(4), 8)
    np.testing.assert_array_equal(_columns(centre), np.tile(np.arange(2, 10), (4, 1)))
    batch = pipeline.load_split_dict(_column_source(64), 8, crop="random", seed=1)
    starts, flips = set(), set()
    for cols, image in zip(_columns(batch), batch["image"], strict=True):
        flip = cols[0] > cols[-1]
        start = cols[-1] if flip else cols[0]
        np.testing.assert_array_equal(np.sort(cols), np.arange(start, start + 8))
        np.testing.assert_array_equal(np.diff(cols), -1 if flip else 1)
        np.testing.assert_allclose(_to_uint8(image[..., 0]), np.broadcast_to(cols * 20, (8, 8)))
        starts.add(int(start))
        flips.add(bool(flip))
    assert starts == set(range(5)) and flips == {False, True}
    again = pipeline.load_split_dict(_column_source(64), 8, crop="random", seed=1)
    np.testing.assert_array_equal(again["image"], batch["image"])
    with pytest.raises(ValueError, match="crop must be one of"):
        pipeline.load_split_dict(_column_source(4), 8, crop="middle")


def test_random_crop_loader_shard_invariant_and_resumable():
    def loader(**kw):
        return pipeline.make_train_loader(
            _column_source(40), batch_size=8, image_size=8, seed=2, crop="random", **kw
        )

    whole = loader()
    shards = [loader(shard_index=i, shard_count=2) for i in range(2)]
    batches = []
    for _ in range(6):
        parts = [next(s) for s in shards]
        batch = next(whole)
        batches.append(batch)
        for key in ("image", "label", "segmentation"):
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), batch[key])
    resumed = loader()
    for _ in range(2):
        next(resumed)
    state = json.loads(json.dumps(resumed.get_state()))
    fresh = loader()
    fresh.set_state(state)
    for expected in batches[2:]:
        np.testing.assert_array_equal(next(fresh)["segmentation"], expected["segmentation"])


def test_channel_conversion_matches_pillow():
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    want = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(pipeline.convert_channels(rgb, 1)[..., 0], want)
    grey = want[..., None]
    np.testing.assert_array_equal(pipeline.convert_channels(grey, 3), np.repeat(grey, 3, -1))
    out = pipeline.load_split_dict([{"image": grey}], 7, channels=3)
    assert out["image"].shape == (1, 7, 7, 3)  # 5x7 -> centre 5x5, padded to 7x7.
    np.testing.assert_array_equal(out["label"], [0])  # No labels: zeros.
