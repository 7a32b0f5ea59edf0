"""data.name=image_folder: odd files, labels, captions, splits, crops and re-preparation."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from ldm_jax.data import datasets, pipeline

SIZE = 8


def _gradient(h: int, w: int, c: int = 3) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    planes = [(x * 255 // max(1, w - 1)), (y * 255 // max(1, h - 1)), ((x + y) * 7) % 256]
    return np.stack(planes[:c], axis=-1).astype(np.uint8)


@pytest.fixture
def odd_folder(tmp_path):
    """cats/{non-square jpeg, grey png}, dogs/{rgba png, 16-bit png, corrupt png, cmyk jpeg}."""
    root = tmp_path / "pets"
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    (root / ".hidden").mkdir()
    Image.fromarray(_gradient(24, 40)).save(root / "cats" / "a_rgb.JPG", quality=95)
    Image.fromarray(_gradient(30, 20)[..., 0], "L").save(root / "cats" / "b_grey.png")
    rgba = _gradient(16, 16, 3)
    alpha = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (16, 1))[..., None]
    Image.fromarray(np.concatenate([rgba, alpha], -1), "RGBA").save(root / "dogs" / "c_rgba.png")
    deep = (np.arange(24 * 24).reshape(24, 24) * 113 % 65536).astype(np.uint16)
    Image.fromarray(deep).save(root / "dogs" / "d_16bit.png")
    cmyk = Image.fromarray(_gradient(10, 14)).convert("CMYK")
    cmyk.save(root / "dogs" / "f_cmyk.jpeg", quality=95)
    (root / "dogs" / "e_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "dogs" / "notes.txt").write_text("not an image")
    Image.fromarray(_gradient(8, 8)).save(root / ".hidden" / "x.png")
    return root


def _expected(root, rel: str) -> np.ndarray:
    """The stored image, by hand: Pillow conversion, then the shorter side resized to SIZE."""
    with Image.open(os.path.join(root, rel)) as im:
        im.load()
        if rel.endswith("16bit.png"):
            grey = np.rint(np.asarray(im).astype(np.float64) / 257.0).astype(np.uint8)
            im = Image.fromarray(grey, "L").convert("RGB")
        elif im.mode == "RGBA":
            a = np.asarray(im).astype(np.float64)
            rgb = a[..., :3] * a[..., 3:] / 255 + 255 * (1 - a[..., 3:] / 255)
            im = Image.fromarray(np.rint(rgb).astype(np.uint8), "RGB")
        else:
            im = im.convert("RGB")
    w, h = im.size
    size = (SIZE, round(h * SIZE / w)) if w <= h else (round(w * SIZE / h), SIZE)
    return np.asarray(im.resize(size, Image.Resampling.BICUBIC) if size != (w, h) else im)


def test_odd_files_round_trip(odd_folder, tmp_path, caplog):
    data_dir = str(tmp_path / "tfds")
    with caplog.at_level(logging.WARNING):
        source = datasets.get_data_source(
            "image_folder", "train", data_dir, path=str(odd_folder), image_size=SIZE
        )
    assert "Skipped 1 of 6 image files of split 'train'" in caplog.text
    assert "1 corrupt (e.g. dogs/e_corrupt.png (corrupt))" in caplog.text
    assert source.skipped == ("dogs/e_corrupt.png",)
    assert source.skip_reasons == {"dogs/e_corrupt.png": "corrupt"}
    names = [source[i]["file_name"] for i in range(len(source))]
    assert names == [
        "cats/a_rgb.JPG",
        "cats/b_grey.png",
        "dogs/c_rgba.png",
        "dogs/d_16bit.png",
        "dogs/f_cmyk.jpeg",
    ]
    assert [source[i]["label"] for i in range(5)] == [0, 0, 1, 1, 1]
    assert source.plan.class_names == ("cats", "dogs")
    stored = [source[i]["image"] for i in range(5)]
    shapes = [(8, 13, 3), (12, 8, 3), (8, 8, 3), (8, 8, 3), (8, 11, 3)]
    assert [s.shape for s in stored] == shapes
    for name, image in zip(names, stored, strict=True):
        np.testing.assert_array_equal(image, _expected(odd_folder, name), err_msg=name)
    batch = pipeline.load_split_dict(source, SIZE)
    assert batch["image"].shape == (5, 8, 8, 3) and batch["image"].dtype == np.float32
    np.testing.assert_array_equal(batch["label"], [0, 0, 1, 1, 1])
    assert "caption" not in batch and "segmentation" not in batch
    # Centre crops: (13 - 8) // 2, (12 - 8) // 2, (11 - 8) // 2.
    centre = [stored[0][:, 2:10], stored[1][2:10], stored[2], stored[3], stored[4][:, 1:9]]
    for got, want in zip(batch["image"], centre, strict=True):
        np.testing.assert_allclose(got, want / 127.5 - 1.0, atol=1e-6)
    grey = datasets.get_data_source(
        "image_folder", "train[1:2]", data_dir, path=str(odd_folder), image_size=SIZE, channels=1
    )
    want = np.asarray(Image.fromarray(_expected(odd_folder, "cats/b_grey.png")).convert("L"))
    np.testing.assert_array_equal(grey[0]["image"][..., 0], want)


def test_metadata_captions_labels_and_split_folders(tmp_path):
    root = tmp_path / "captioned"
    for split, n in (("train", 3), ("test", 2)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_gradient(10 + i, 12)).save(root / split / f"{i}.png")
    lines = [
        {"file_name": "train/0.png", "caption": "a zebra", "label": "zebra"},
        {"file_name": "train/2.png", "text": "an apple", "label": "apple"},
        {"file_name": "test/1.png", "caption": "a zebra again", "label": "zebra"},
        {"file_name": "test/0.png", "caption": "", "label": "apple"},
    ]  # train/1.png is not named: left out.
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    data_dir = str(tmp_path / "tfds")
    kw = dict(path=str(root), image_size=SIZE)
    train = datasets.get_data_source("image_folder", "train", data_dir, **kw)
    test = datasets.get_data_source("image_folder", "test", data_dir, **kw)
    assert [(e["file_name"], e["caption"], e["label"]) for e in train] == [
        ("train/0.png", "a zebra", 1),
        ("train/2.png", "an apple", 0),
    ]
    assert [e["label"] for e in test] == [0, 1]
    assert train.plan.left_out == ("train/1.png",)
    assert datasets.num_classes("image_folder", path=str(root)) == 2
    batch = pipeline.load_split_dict(test, SIZE)
    assert batch["caption"].dtype == object and list(batch["caption"]) == ["", "a zebra again"]
    with pytest.raises(ValueError, match=r"split 'validation'.*\['test', 'train'\]"):
        datasets.get_data_source("image_folder", "validation", data_dir, **kw)


def test_changed_folder_is_prepared_again_and_unchanged_one_reused(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(3):
        Image.fromarray(_gradient(9, 9 + i)).save(root / f"{i}.png")
    data_dir = tmp_path / "tfds"
    kw = dict(path=str(root), image_size=SIZE)
    first = datasets.get_data_source("image_folder", "train", str(data_dir), **kw)
    assert len(first) == 3 and "label" not in first[0]  # Loose images: no labels.
    prepared = os.listdir(data_dir / "image_folder")
    assert len(datasets.get_data_source("image_folder", "train", str(data_dir), **kw)) == 3
    assert os.listdir(data_dir / "image_folder") == prepared  # Reused.
    Image.fromarray(_gradient(9, 20)).save(root / "3.png")
    again = datasets.get_data_source("image_folder", "train", str(data_dir), **kw)
    assert len(again) == 4 and again[3]["image"].shape == (8, 18, 3)
    assert len(os.listdir(data_dir / "image_folder")) == 2


def test_missing_and_empty_folders_name_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"{missing} does not exist.*data.path"):
        datasets.get_data_source(
            "image_folder", "train", str(tmp_path), path=str(missing), image_size=SIZE
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match=f"{empty} holds no image files.*png"):
        datasets.get_data_source(
            "image_folder", "train", str(tmp_path), path=str(empty), image_size=SIZE
        )
    with pytest.raises(ValueError, match="needs data.path"):
        datasets.get_data_source("image_folder", "train", str(tmp_path), image_size=SIZE)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match=f"None of the 1 image files of split 'train' in {broken}"):
        datasets.get_data_source(
            "image_folder", "train", str(tmp_path / "tfds"), path=str(broken), image_size=SIZE
        )
