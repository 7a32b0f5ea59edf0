"""Dataset registry: names -> prepared tfds builders -> random-access data sources.

Sources are read from array_record files through `tfds` without TensorFlow. Names:

* ``"fashion_mnist"`` (the default; alias ``"fashion_mnist_debian"``): Fashion-MNIST from the
  Debian package ``dataset-fashion-mnist``, prepared into ``data_dir`` on first use (about 5 s).
* Any other name is a tfds catalog name (e.g. ``"celeb_a_hq/256"``, ``"lsun/church_outdoor"``)
  that the user has already prepared in ``data_dir`` in the array_record format. Nothing is ever
  downloaded: an unprepared catalog dataset raises at once with instructions. This path is not
  exercised offline (no catalog dataset is available here).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds

from ldm_jax.data import fashion_mnist_builder, fashion_mnist_idx

DEFAULT_DATASET = "fashion_mnist"
_DEBIAN_NAMES = ("fashion_mnist", "fashion_mnist_debian")
_SPLIT_RE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(\[[^\]]*\])?\s*$")


@dataclasses.dataclass(frozen=True)
class DatasetSummary:
    """What a dataset holds, read from its tfds `DatasetInfo`.

    Attributes:
      name: the name as given to `get_data_source`.
      num_examples: examples per split, e.g. {"train": 60000, "test": 10000}.
      image_shape: [H, W, C] of the "image" feature; None entries for variable sizes.
      num_classes: classes of the "label" feature, or None if the dataset has no label.
      class_names: the label names (empty if none).
      feature_keys: the keys of one example, e.g. ("image", "label").
    """

    name: str
    num_examples: dict[str, int]
    image_shape: tuple[int | None, ...] | None
    num_classes: int | None
    class_names: tuple[str, ...]
    feature_keys: tuple[str, ...]


def default_data_dir() -> str:
    """`$TFDS_DATA_DIR`, else `~/tensorflow_datasets` (tfds' own default)."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"Invalid dataset name {name!r}: use {DEFAULT_DATASET!r} (offline, the default) "
            "or a tfds catalog name prepared in data_dir (e.g. 'celeb_a_hq/256')."
        )
    return name.strip()


def _is_debian(name: str) -> bool:
    return name in _DEBIAN_NAMES


def get_builder(name: str = DEFAULT_DATASET, data_dir: str | None = None) -> Any:
    """Returns a prepared tfds builder for `name` (see module docstring).

    Args:
      name: "fashion_mnist" or a tfds catalog name prepared in `data_dir`.
      data_dir: tfds data folder; defaults to `default_data_dir()`.

    Returns:
      A `tfds.core.DatasetBuilder` whose `is_prepared()` is True.

    Raises:
      ValueError: empty/invalid or unknown dataset name.
      FileNotFoundError: Debian files missing, or a catalog dataset not prepared in `data_dir`.
    """
    name = _check_name(name)
    data_dir = data_dir or default_data_dir()
    if _is_debian(name):
        return _prepare_debian(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except Exception as e:  # tfds raises DatasetNotFoundError, ImportError, ValueError, ...
        raise ValueError(
            f"Unknown dataset name {name!r} ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            f"Valid names: {DEFAULT_DATASET!r} (offline) or a tfds catalog name, see "
            "https://www.tensorflow.org/datasets/catalog/overview"
        ) from e
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"tfds dataset {name!r} is not prepared in {builder.data_dir} and ldm_jax never "
            "downloads. Prepare it once (needs network and possibly manual downloads) with: "
            f'python -c "import tensorflow_datasets as tfds; tfds.builder({name!r}, '
            f"data_dir={data_dir!r}).download_and_prepare(file_format='array_record')\" "
            "or `tfds build --file_format=array_record`, then pass the same data_dir."
        )
    return builder


def _prepare_debian(data_dir: str) -> fashion_mnist_builder.FashionMnistDebian:
    try:
        return fashion_mnist_builder.prepare(data_dir)
    except FileNotFoundError:
        raise
    except Exception:
        # Another process may have prepared (and renamed into place) the same version meanwhile.
        builder = fashion_mnist_builder.FashionMnistDebian(
            data_dir=data_dir, file_format=fashion_mnist_builder.FILE_FORMAT
        )
        if builder.is_prepared():
            return builder
        raise


def _check_split(name: str, split: Any, valid: Sequence[str]) -> str:
    parts = split.split("+") if isinstance(split, str) and split.strip() else [None]
    for part in parts:
        match = _SPLIT_RE.match(part) if part is not None else None
        if match is None or match.group(1) not in valid:
            raise ValueError(
                f"Invalid split {split!r} for dataset {name!r}: use one of {sorted(valid)} "
                "(tfds slicing such as 'train[:1000]' or 'train+test' is allowed)."
            )
    return split.replace(" ", "")


def get_data_source(
    name: str = DEFAULT_DATASET, split: str = "train", data_dir: str | None = None
) -> Sequence[dict[str, Any]]:
    """Returns a random-access source of examples (a tfds `ArrayRecordDataSource`).

    `len(source)` is the number of examples and `source[i]` one example as a dict of numpy values
    (for "fashion_mnist": image uint8 [28, 28, 1], label int64 scalar in [0, 10)); record i is
    IDX example i. The source can be handed to `grain.MapDataset.source`.

    Args:
      name: "fashion_mnist" (default) or a tfds catalog name prepared in `data_dir`.
      split: a split name ("train", "test", ...), optionally tfds-sliced ("train[:1000]").
      data_dir: tfds data folder; defaults to `default_data_dir()`.

    Raises:
      ValueError: empty/invalid/unknown name or split; the message lists the valid choices.
      FileNotFoundError: Debian files missing, or a catalog dataset not prepared in `data_dir`.
    """
    name = _check_name(name)
    if _is_debian(name):  # Validate before spending seconds on preparing.
        split = _check_split(name, split, ("train", "test"))
    builder = get_builder(name, data_dir)
    split = _check_split(name, split, tuple(builder.info.splits.keys()))
    return builder.as_data_source(split=split)


def dataset_summary(name: str = DEFAULT_DATASET, data_dir: str | None = None) -> DatasetSummary:
    """Describes a prepared dataset (splits, image shape, classes); prepares the Debian one."""
    builder = get_builder(name, data_dir)
    features = builder.info.features
    image = features["image"] if "image" in features else None
    label = features["label"] if "label" in features else None
    classes = label.num_classes if isinstance(label, tfds.features.ClassLabel) else None
    return DatasetSummary(
        name=name,
        num_examples={k: int(v.num_examples) for k, v in builder.info.splits.items()},
        image_shape=tuple(image.shape) if image is not None else None,
        num_classes=classes,
        class_names=tuple(label.names) if classes else (),
        feature_keys=tuple(features.keys()),
    )


def num_classes(name: str = DEFAULT_DATASET, data_dir: str | None = None) -> int | None:
    """Number of label classes (10 for "fashion_mnist", known without preparing); None if none."""
    if _is_debian(_check_name(name)):
        return len(fashion_mnist_idx.CLASS_NAMES)
    return dataset_summary(name, data_dir).num_classes
