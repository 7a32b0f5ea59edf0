"""synthetic_shapes: determinism, captions that match the pixels, segmentation, splits."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from ldm_jax.data import datasets, pipeline
from ldm_jax.data import synthetic_shapes as shapes

_CAPTION = re.compile(r"^an? (\w+) (\w+) on an? (\w+) background$")


def _source(split="train", **kw):
    return datasets.get_data_source("synthetic_shapes", split, **kw)


def test_deterministic_by_seed_and_splits_differ():
    a, b, c = _source(seed=3), _source(seed=3), _source(seed=4)
    for i in (0, 7, 511):
        for key in ("image", "segmentation"):
            np.testing.assert_array_equal(a[i][key], b[i][key])
        assert (a[i]["label"], a[i]["caption"]) == (b[i]["label"], b[i]["caption"])
    assert any(not np.array_equal(a[i]["image"], c[i]["image"]) for i in range(4))
    test = _source("test", seed=3)
    assert all(not np.array_equal(a[i]["image"], test[i]["image"]) for i in range(4))


@pytest.mark.parametrize("num_classes", [6, 48])
def test_caption_segmentation_and_label_agree_with_the_pixels(num_classes):
    source = _source(image_size=24, num_classes=num_classes, seed=1)
    labels = set()
    for i in range(64):
        e = source[i]
        image, seg, label = e["image"], e["segmentation"], e["label"]
        assert image.shape == (24, 24, 3) and image.dtype == np.uint8
        assert seg.shape == (24, 24) and seg.dtype == np.uint8
        colour, shape, background = _CAPTION.match(e["caption"]).groups()
        assert shape == shapes.SHAPES[label % 6]
        if num_classes == 48:
            assert colour == list(shapes.COLOURS)[label // 6]
        assert set(np.unique(seg)) == {0, label + 1}
        assert np.all(image[seg > 0] == shapes.COLOURS[colour])
        assert np.all(image[seg == 0] == shapes.BACKGROUNDS[background])
        labels.add(label)
    assert labels <= set(range(num_classes)) and len(labels) >= min(num_classes, 20)


def test_split_sizes_slicing_and_grey():
    assert len(_source("train")) == 512 and len(_source("test")) == 128
    assert len(_source("train+test")) == 640 and len(_source("train[:64]")) == 64
    sliced, whole = _source("train[10:20]"), _source("train")
    np.testing.assert_array_equal(sliced[0]["image"], whole[10]["image"])
    assert len(_source("test[-25%:]")) == 32
    with pytest.raises(ValueError, match=r"Invalid split 'validation'.*\['test', 'train'\]"):
        _source("validation")
    with pytest.raises(ValueError, match="1 to 48 classes"):
        _source(num_classes=49)
    grey = _source(image_size=16, channels=1)[5]["image"]
    rgb = _source(image_size=16, channels=3)[5]["image"]
    assert grey.shape == (16, 16, 1)
    np.testing.assert_array_equal(grey[..., 0], np.asarray(Image.fromarray(rgb).convert("L")))
    assert datasets.num_classes("synthetic_shapes") == 6
    assert datasets.num_classes("synthetic_shapes", num_classes=12) == 12


def test_load_split_dict_has_every_key_and_resizes_segmentation_nearest():
    source = _source("test[:16]", image_size=32, num_classes=12)
    batch = pipeline.load_split_dict(source, 16, channels=1)
    assert batch["image"].shape == (16, 16, 16, 1) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and batch["segmentation"].dtype == np.int32
    assert batch["segmentation"].shape == (16, 16, 16) and batch["caption"].shape == (16,)
    for i in range(16):
        e = source[i]
        assert batch["caption"][i] == e["caption"] and batch["label"][i] == e["label"]
        want = Image.fromarray(e["segmentation"]).resize((16, 16), Image.Resampling.NEAREST)
        np.testing.assert_array_equal(batch["segmentation"][i], np.asarray(want))
