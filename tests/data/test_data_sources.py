"""Dataset names, splits and data dirs: validation fails fast with helpful messages."""

from __future__ import annotations

import os
import time

import pytest

from ldm_jax.data import datasets


@pytest.mark.parametrize("name", ["", "   ", None, 3])
def test_empty_or_invalid_name(tmp_path, name):
    with pytest.raises(ValueError, match=r"dataset name.*'fashion_mnist'"):
        datasets.get_data_source(name, "train", str(tmp_path))


def test_unknown_name_fails_fast(tmp_path):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"Unknown dataset name 'no_such_dataset_xyz'"):
        datasets.get_data_source("no_such_dataset_xyz", "train", str(tmp_path))
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("split", ["validation", "", None, "train[:10]+tst"])
def test_invalid_split_names_choices_before_preparing(tmp_path, split):
    with pytest.raises(ValueError, match=r"split.*\['test', 'train'\]"):
        datasets.get_data_source("fashion_mnist", split, str(tmp_path))
    assert not os.path.exists(tmp_path / "fashion_mnist_debian")  # Validated before preparing.


def test_unprepared_catalog_dataset_fails_fast_without_download(tmp_path):
    # `mnist` is in the tfds catalog but not prepared here; tfds alone would try the network.
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=r"'mnist' is not prepared.*download_and_prepare"):
        datasets.get_data_source("mnist", "train", str(tmp_path))
    assert time.perf_counter() - start < 10
    assert not os.path.exists(tmp_path / "downloads")


def test_split_slicing_and_union(tfds_dir):
    assert len(datasets.get_data_source("fashion_mnist", "train[:100]", tfds_dir)) == 100
    assert len(datasets.get_data_source("fashion_mnist", "test[:10]+train[:5]", tfds_dir)) == 15
    assert len(datasets.get_data_source("fashion_mnist_debian", "test", tfds_dir)) == 10000


def test_num_classes_and_default_dir(monkeypatch, tmp_path):
    assert datasets.num_classes("fashion_mnist") == 10
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert datasets.default_data_dir() == str(tmp_path)
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert datasets.default_data_dir() == os.path.expanduser("~/tensorflow_datasets")


def test_unprepared_message_names_the_preparation_commands(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        datasets.get_data_source("lsun/church_outdoor", "train", str(tmp_path))
    message = str(info.value)
    assert "\n" not in message and "never downloads" in message
    assert f"tfds build lsun/church_outdoor --file_format=array_record --data_dir={tmp_path}" in (
        message
    )
    assert "manual" not in message and "data.name=image_folder" in message
    # ImageNet needs a manual download: the message says where the files go.
    with pytest.raises(FileNotFoundError, match=r"manual download.*manual_dir="):
        datasets.get_data_source("imagenet2012", "train", str(tmp_path))
    assert not os.path.exists(tmp_path / "downloads")


@pytest.mark.parametrize("name", ["ffhq", "laion400m", "flickr_landscapes", "places365"])
def test_paper_datasets_missing_from_tfds_point_to_image_folder(tmp_path, name):
    with pytest.raises(
        FileNotFoundError,
        match=rf"'{name}' is not in the tfds catalog.*"
        r"data.name=image_folder --config.data.path=",
    ):
        datasets.get_data_source(name, "train", str(tmp_path))


def test_paper_dataset_names_are_tfds_names_or_known_missing():
    """Every dataset named by a paper/SD config is in the tfds catalog or in NOT_IN_TFDS."""
    import tensorflow_datasets as tfds

    catalog = set(tfds.list_builders(with_community_datasets=False))
    paper = ["celeb_a_hq", "lsun/church_outdoor", "lsun/bedroom", "imagenet2012", "open_images_v4"]
    for name in paper:
        assert name.split("/")[0] in catalog, name
    for name in datasets.NOT_IN_TFDS:
        assert name not in catalog, name
