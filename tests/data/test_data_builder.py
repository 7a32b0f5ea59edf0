"""The tfds builder for Debian Fashion-MNIST: preparation, counts, content, errors."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from ldm_jax.data import datasets, fashion_mnist_builder, fashion_mnist_idx


def test_prepared_counts_and_features(tfds_dir):
    summary = datasets.dataset_summary("fashion_mnist", tfds_dir)
    assert summary.num_examples == {"train": 60000, "test": 10000}
    assert summary.image_shape == (28, 28, 1)
    assert summary.num_classes == 10
    assert summary.class_names == fashion_mnist_idx.CLASS_NAMES
    assert set(summary.feature_keys) == {"image", "label"}
    assert len(datasets.get_data_source("fashion_mnist", "train", tfds_dir)) == 60000
    assert len(datasets.get_data_source("fashion_mnist", "test", tfds_dir)) == 10000
    files = os.listdir(os.path.join(tfds_dir, "fashion_mnist_debian", "1.0.0"))
    assert any(".array_record" in f for f in files), files


@pytest.mark.parametrize("split", ["train", "test"])
def test_records_equal_idx_arrays_in_order(tfds_dir, split):
    images, labels = fashion_mnist_idx.read_idx_arrays(split)
    source = datasets.get_data_source("fashion_mnist", split, tfds_dir)
    for i in (0, 1, 777, len(source) - 1):
        example = source[i]
        assert example["image"].dtype == np.uint8
        assert example["image"].shape == (28, 28, 1)
        np.testing.assert_array_equal(example["image"][..., 0], images[i])
        assert int(example["label"]) == labels[i]


def test_second_prepare_is_a_fast_no_op(tfds_dir):
    start = time.perf_counter()
    builder = fashion_mnist_builder.prepare(tfds_dir)
    assert builder.is_prepared()
    assert time.perf_counter() - start < 2.0


def test_missing_idx_files_give_install_hint(tmp_path, monkeypatch):
    empty = tmp_path / "no_idx"
    empty.mkdir()
    monkeypatch.setenv("LDM_JAX_FASHION_MNIST_DIR", str(empty))
    data_dir = tmp_path / "tfds"
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        datasets.get_data_source("fashion_mnist", "train", str(data_dir))
    assert not fashion_mnist_builder.FashionMnistDebian(data_dir=str(data_dir)).is_prepared()
