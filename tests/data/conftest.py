"""Data fixtures (the prepared tfds dir `tfds_dir` comes from tests/conftest.py)."""

from __future__ import annotations

import pytest

from ldm_jax.data import datasets, fashion_mnist_idx


@pytest.fixture(scope="session")
def raw_train() -> tuple:
    """IDX arrays: uint8 [60000, 28, 28], int64 [60000]."""
    return fashion_mnist_idx.read_idx_arrays("train")


@pytest.fixture(scope="session")
def train_source(tfds_dir: str):
    return datasets.get_data_source("fashion_mnist", "train", tfds_dir)
