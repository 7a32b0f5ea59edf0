"""tfds builder for Fashion-MNIST read offline from the Debian IDX files.

Prepared without TensorFlow or network access::

    builder = FashionMnistDebian(data_dir=data_dir)
    builder.download_and_prepare(file_format="array_record", download_config=DOWNLOAD_CONFIG)
    source = builder.as_data_source(split="train")   # random access, grain-compatible
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from ldm_jax.data import fashion_mnist_idx, tfds_quiet

IMAGE_SHAPE = (28, 28, 1)
FILE_FORMAT = "array_record"
# No GCS mirror and no downloads: the builder only reads local IDX files.
DOWNLOAD_CONFIG = tfds.download.DownloadConfig(try_download_gcs=False)


class FashionMnistDebian(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST (60k train / 10k test, 28x28 grey, 10 classes) from `dataset-fashion-mnist`."""

    # tfds derives the registered name from the class name: "fashion_mnist_debian".
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Read from the Debian package's IDX files; uint8 Tensor images."}
    # tfds' own `code_path` lookup needs the `importlib_resources` backport for packages installed
    # as plain folders; give the path directly (same value, one dependency less).
    code_path = epath.Path(__file__)

    def _log_download_bytes(self) -> None:  # tfds prints these to stdout; nothing to add.
        pass

    def _log_download_done(self) -> None:
        pass

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Fashion-MNIST from the Debian package dataset-fashion-mnist (MIT).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=list(fashion_mnist_idx.CLASS_NAMES)),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep the IDX order so record i is IDX example i (the loader shuffles anyway).
            disable_shuffling=True,
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # Nothing to download.
        return {split: self._generate_examples(split) for split in ("train", "test")}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        images, labels = fashion_mnist_idx.read_idx_arrays(split)  # [N, 28, 28], [N]
        for i in range(images.shape[0]):
            yield i, {"image": images[i][..., None], "label": int(labels[i])}


def prepare(data_dir: str) -> FashionMnistDebian:
    """Prepares the builder into `data_dir` (no-op if already prepared) and returns it.

    Raises:
      FileNotFoundError: the Debian IDX files are missing (the message says how to install them).
    """
    with tfds_quiet.quiet():
        builder = FashionMnistDebian(data_dir=data_dir, file_format=FILE_FORMAT)
        if not builder.is_prepared():
            # Read the files first so a missing package fails fast with the install hint.
            fashion_mnist_idx.read_idx_arrays("test")
            logging.info("Preparing Fashion-MNIST into %s (once, about 5 s)", data_dir)
            builder.download_and_prepare(file_format=FILE_FORMAT, download_config=DOWNLOAD_CONFIG)
    return builder
