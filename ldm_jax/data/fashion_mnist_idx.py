"""Reads Fashion-MNIST from the Debian package `dataset-fashion-mnist` (IDX format)."""

from __future__ import annotations

import gzip
import os

import numpy as np

from ldm_jax.data.errors import DataError

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_REINSTALL = "reinstall it: sudo apt-get install --reinstall dataset-fashion-mnist"
INSTALL_HINT = (
    "Fashion-MNIST is read offline from the Debian package 'dataset-fashion-mnist'. "
    "Install it with: sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist "
    "(or point LDM_JAX_FASHION_MNIST_DIR at a folder holding the four *-ubyte.gz files)."
)


def source_dir() -> str:
    """Folder holding the IDX files (env `LDM_JAX_FASHION_MNIST_DIR` overrides the default)."""
    return os.environ.get("LDM_JAX_FASHION_MNIST_DIR", DEFAULT_DIR)


def _read_idx(path: str, expected_ndim: int) -> np.ndarray:
    """Parses one gzipped IDX file (magic: 0x00 0x00 dtype ndim, big-endian dims)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Missing Fashion-MNIST file {path}. {INSTALL_HINT}")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(
            f"Corrupt Fashion-MNIST file {path} ({e}). Reinstall the package: "
            "sudo apt-get install --reinstall dataset-fashion-mnist"
        ) from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != expected_ndim:
        raise DataError(
            f"{path} is not an unsigned-byte IDX file with {expected_ndim} dims: {_REINSTALL}"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(expected_ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * expected_ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(
            f"{path} is truncated: header says {dims}, found {data.size} bytes: {_REINSTALL}"
        )
    return data.reshape(dims)


def read_idx_arrays(split: str, directory: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns Fashion-MNIST `(images, labels)` for a split.

    Args:
      split: "train" (60,000 examples) or "test" (10,000 examples).
      directory: folder with the IDX files; defaults to `source_dir()`.

    Returns:
      images: uint8 [N, 28, 28]; labels: int64 [N] in [0, 10).
    """
    if split not in _FILES:
        raise ValueError(f"Unknown Fashion-MNIST split {split!r}; use one of {sorted(_FILES)}.")
    directory = directory or source_dir()
    image_file, label_file = _FILES[split]
    images = _read_idx(os.path.join(directory, image_file), 3)
    labels = _read_idx(os.path.join(directory, label_file), 1).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Fashion-MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels."
        )
    return images, labels
