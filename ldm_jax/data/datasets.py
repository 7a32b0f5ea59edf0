"""Dataset registry: a name -> a random-access source of examples (dicts of numpy values).

Every source has `len(source)` and `source[i]` (and a batched `__getitems__`), can be handed to
`grain.MapDataset.source`, and yields {"image": uint8 [H, W, C]} plus, where the dataset has them,
"label" (int), "caption" (str) and "segmentation" (uint8 [H, W] class ids). Names:

* ``"fashion_mnist"`` (the default; alias ``"fashion_mnist_debian"``): Fashion-MNIST from the
  Debian package ``dataset-fashion-mnist``, prepared into ``data_dir`` on first use (about 5 s);
  28x28x1 images as stored (the pipeline pads them to the model size).
* ``"image_folder"``: your own images at ``path`` (`data/image_folder.py`: layout, labels,
  captions), prepared once into ``data_dir`` with the shorter side resized to ``image_size``.
* ``"synthetic_shapes"``: generated coloured shapes with labels, captions and segmentation maps
  (`data/synthetic_shapes.py`); offline, deterministic by ``seed``, nothing stored.
* ``"noto_emoji"``: every single-code-point emoji of the Debian font ``fonts-noto-color-emoji``
  rendered over white, with captions (Unicode name + CLDR keywords) and a held-out "test" split
  (`data/noto_emoji_builder.py`), prepared into ``data_dir`` on first use; stored at 32 or 64 px,
  the smallest that is at least ``image_size`` (default 64). ``"noto_emoji/32px"`` and
  ``"noto_emoji/64px"`` name a size directly. Examples add "name", "keywords", "codepoint".
* ``"noto_emoji_segmentation"`` (and ``/32px``, ``/64px``, sizes as noto_emoji): the same
  emoji, splits and images with a semantic map "segmentation" uint8 [S, S] of 9 classes:
  background where the glyph is transparent, else one of 8 colour classes (nearest CIELAB
  centroid fitted on the train split; `data/emoji_palette.py`); prepared into ``data_dir``.
* ``"fashion_mnist_layout"``: canvases of ``image_size`` (default 64) px holding 1-4
  Fashion-MNIST items with "boxes" float32 [4, 4] (x0, y0, x1, y1 in [0, 1]), "classes" int32
  [4] (10 = padding) and "num_objects" (`data/fashion_mnist_layout.py`); generated on access
  from the Debian package, a fixed dataset (generator seed 0, not the training seed); "train"
  and "test" canvases draw items from Fashion-MNIST's train and test images. Token ids for the
  layout model: `data/layout_tokens.py`.
* Any other name is a tfds catalog name (e.g. ``"celeb_a_hq/256"``, ``"lsun/church_outdoor"``)
  that the user has already prepared in ``data_dir`` in the array_record format. Nothing is ever
  downloaded: an unprepared catalog dataset raises at once with the command that prepares it; a
  dataset of the paper that tfds does not have (FFHQ, LAION, ...) raises with the image_folder
  route. Catalog sources yield the stored features (not exercised offline: none is prepared here).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds

from ldm_jax.data import (
    emoji_palette,
    fashion_mnist_builder,
    fashion_mnist_idx,
    fashion_mnist_layout,
    image_folder,
    noto_emoji_builder,
    noto_emoji_segmentation_builder,
    split_slices,
    synthetic_shapes,
)
from ldm_jax.data.errors import DataError

DEFAULT_DATASET = "fashion_mnist"


class UnknownDatasetError(DataError):
    """`data.name` is neither one of ours nor a tfds catalog name (the message lists both)."""


_DEBIAN_NAMES = ("fashion_mnist", "fashion_mnist_debian")
IMAGE_FOLDER = "image_folder"
SYNTHETIC_SHAPES = "synthetic_shapes"
NOTO_EMOJI = noto_emoji_builder.NAME
NOTO_EMOJI_SEGMENTATION = noto_emoji_segmentation_builder.NAME
FASHION_MNIST_LAYOUT = fashion_mnist_layout.NAME
_NOTO_NAMES = (NOTO_EMOJI, NOTO_EMOJI_SEGMENTATION)
_GENERATED = (IMAGE_FOLDER, SYNTHETIC_SHAPES, FASHION_MNIST_LAYOUT)  # Sources, not tfds builders.
_FOLDER_HINT = (
    "train on your own copy as a folder of images instead: --config.data.name=image_folder "
    "--config.data.path=/path/to/images (labels from class sub-folders, captions from a "
    "metadata.jsonl; see ldm_jax/data/image_folder.py)"
)
# Datasets of the paper (and of Stable Diffusion) that the tfds catalog does not have.
NOT_IN_TFDS = {
    "ffhq": "FFHQ is published by NVIDIA at https://github.com/NVlabs/ffhq-dataset",
    "flickr_landscapes": "the paper's landscapes were scraped from Flickr and never released",
    "laion400m": "LAION-400M is a list of URLs (https://laion.ai/blog/laion-400-open-dataset/)",
    "laion": "LAION-2B/5B are lists of URLs (download them with img2dataset)",
    "laion2b_en": "LAION-2B is a list of URLs (download it with img2dataset)",
    "laion_aesthetics": "LAION-Aesthetics is a list of URLs (download it with img2dataset)",
    "previews": "the paper's text-to-image previews are not a released dataset",
    "places365": "tfds has the 256x256 'places365_small' (name it instead) but not full Places365",
    "coco_stuff": "COCO-Stuff's segmentation maps are not in tfds",
    "ade20k": "ADE20K is not in tfds",
}
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


def _noto_config(name: str, image_size: int | None = None) -> tuple[str, str] | None:
    """(base name, config "64px"/"32px") of a noto_emoji(_segmentation) name, else None."""
    base, _, config = name.partition("/")
    if base not in _NOTO_NAMES:
        return None
    if not config:
        return base, noto_emoji_builder.config_for(image_size)
    valid = [f"{s}px" for s in noto_emoji_builder.SIZES]
    if config not in valid:
        raise ValueError(
            f"Unknown dataset {name!r}: use {base!r} or one of "
            + ", ".join(f"'{base}/{v}'" for v in valid)
            + "."
        )
    return base, config


def _prepare_noto(base: str, config: str, data_dir: str) -> Any:
    if base == NOTO_EMOJI_SEGMENTATION:
        return noto_emoji_segmentation_builder.prepare(data_dir, config)
    return noto_emoji_builder.prepare(data_dir, config)


def get_builder(name: str = DEFAULT_DATASET, data_dir: str | None = None) -> Any:
    """Returns a prepared tfds builder for `name` (see module docstring).

    Args:
      name: "fashion_mnist", "noto_emoji" or "noto_emoji_segmentation" (64 px; "/32px" for 32)
        or a tfds catalog name prepared in `data_dir`.
      data_dir: tfds data folder; defaults to `default_data_dir()`.

    Returns:
      A `tfds.core.DatasetBuilder` whose `is_prepared()` is True.

    Raises:
      ValueError: empty/invalid dataset name.
      UnknownDatasetError: a name that is neither ours nor in the tfds catalog.
      FileNotFoundError: Debian files missing, or a catalog dataset not prepared in `data_dir`.
    """
    name = _check_name(name)
    data_dir = data_dir or default_data_dir()
    if _is_debian(name):
        return _prepare_debian(data_dir)
    noto = _noto_config(name)
    if noto is not None:
        return _prepare_noto(*noto, data_dir)
    if name in _GENERATED:
        raise ValueError(f"{name!r} is not a tfds builder: use get_data_source({name!r}, ...).")
    if name in NOT_IN_TFDS:
        raise FileNotFoundError(
            f"Dataset {name!r} is not in the tfds catalog ({NOT_IN_TFDS[name]}): {_FOLDER_HINT}."
        )
    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except Exception as e:  # tfds raises DatasetNotFoundError, ImportError, ValueError, ...
        raise UnknownDatasetError(
            f"Unknown dataset name {name!r} ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            f"Valid names: {DEFAULT_DATASET!r}, {NOTO_EMOJI!r} and "
            f"{NOTO_EMOJI_SEGMENTATION!r} (offline), {SYNTHETIC_SHAPES!r} and "
            f"{FASHION_MNIST_LAYOUT!r} (generated), "
            f"{IMAGE_FOLDER!r} (your images) or a tfds catalog name, see "
            "https://www.tensorflow.org/datasets/catalog/overview; or " + _FOLDER_HINT + "."
        ) from e
    if not builder.is_prepared():
        raise FileNotFoundError(_unprepared_message(name, builder, data_dir))
    return builder


def _unprepared_message(name: str, builder: Any, data_dir: str) -> str:
    """One line: the dataset is missing, ldm_jax never downloads, and how to prepare it."""
    manual = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
    manual_dir = os.path.join(data_dir, "downloads", "manual")
    manual_note = (
        f"It needs a manual download first: put the files its catalog page names "
        f"(https://www.tensorflow.org/datasets/catalog/{name.split('/')[0]}) in {manual_dir}. "
        if manual
        else ""
    )
    manual_arg = f", manual_dir={manual_dir!r}" if manual else ""
    return (
        f"tfds dataset {name!r} is not prepared in {builder.data_dir} and ldm_jax never "
        f"downloads. {manual_note}Prepare it once as array_record (network needed):"
        f' python -c "import tensorflow_datasets as tfds; tfds.builder({name!r}, '
        f"data_dir={data_dir!r}).download_and_prepare(file_format='array_record', "
        f'download_config=tfds.download.DownloadConfig(try_download_gcs=False{manual_arg}))" '
        f"(or, where TensorFlow is installed: tfds build {name} --file_format=array_record "
        f"--data_dir={data_dir}"
        f"{' --manual_dir=' + manual_dir if manual else ''}), then pass the same data_dir; or "
        + _FOLDER_HINT
        + "."
    )


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
    name: str = DEFAULT_DATASET,
    split: str = "train",
    data_dir: str | None = None,
    *,
    path: str = "",
    image_size: int | None = None,
    channels: int | None = None,
    num_classes: int | None = None,
    seed: int = 0,
) -> Sequence[dict[str, Any]]:
    """Returns a random-access source of examples (see the module doc for the names).

    `len(source)` is the number of examples and `source[i]` one example as a dict of numpy values
    (for "fashion_mnist": image uint8 [28, 28, 1], label int64 scalar in [0, 10), record i is IDX
    example i). The source can be handed to `grain.MapDataset.source`.

    Args:
      name: "fashion_mnist" (default), "image_folder", "synthetic_shapes", "noto_emoji",
        "noto_emoji_segmentation", "fashion_mnist_layout" or a tfds catalog name prepared in
        `data_dir`.
      split: a split name ("train", "test", ...), optionally tfds-sliced ("train[:1000]").
      data_dir: tfds data folder; defaults to `default_data_dir()`.
      path: the folder of images ("image_folder" only).
      image_size: "image_folder": the stored shorter side (required); "synthetic_shapes": the
        generated size (default 32); "noto_emoji", "noto_emoji_segmentation": picks the stored
        size, 32 or 64 (the smallest >= image_size; default 64); "fashion_mnist_layout": the
        canvas size (default 64). Fashion-MNIST and catalog sources yield stored images: the
        pipeline resizes them.
      channels: 1 or 3 for "image_folder" (default 3) and "synthetic_shapes" (default 3).
      num_classes: classes of "synthetic_shapes" (default 6).
      seed: the generation seed of "synthetic_shapes" ("fashion_mnist_layout" is a fixed
        dataset: always seed 0).

    Raises:
      ValueError: empty/invalid/unknown name or split, empty image folder; the message lists the
        valid choices or the fix.
      DataError: (a ValueError) a slice that keeps no example, an image folder that cannot be
        listed or none of whose files could be read, a file given as the folder, a damaged
        Debian data file; one line naming the fix.
      FileNotFoundError: Debian files missing, missing image folder, a catalog dataset not prepared
        in `data_dir` (the message has the command that prepares it), or a dataset of the paper
        that tfds does not have (the message points to image_folder).
    """
    name = _check_name(name)
    if name == SYNTHETIC_SHAPES:
        return synthetic_shapes.SyntheticShapes(
            split, image_size=image_size, channels=channels, num_classes=num_classes, seed=seed
        )
    if name == IMAGE_FOLDER:
        return image_folder.get_source(
            path,
            split,
            data_dir or default_data_dir(),
            image_size=image_size,
            channels=channels or 3,
        )
    noto = _noto_config(name, image_size)
    if _is_debian(name) or noto or name == FASHION_MNIST_LAYOUT:  # Check before preparing.
        split = _check_split(name, split, ("train", "test"))
    if name == FASHION_MNIST_LAYOUT:
        return fashion_mnist_layout.FashionMnistLayout(split, canvas_size=image_size)
    if noto and noto[0] == NOTO_EMOJI_SEGMENTATION:
        return noto_emoji_segmentation_builder.get_source(
            split, data_dir or default_data_dir(), noto[1]
        )
    if noto:
        return noto_emoji_builder.get_source(split, data_dir or default_data_dir(), noto[1])
    builder = get_builder(name, data_dir)
    split = _check_split(name, split, tuple(builder.info.splits.keys()))
    return split_slices.data_source(builder, split, name)


def dataset_summary(name: str = DEFAULT_DATASET, data_dir: str | None = None) -> DatasetSummary:
    """Describes a prepared tfds dataset (splits, image shape, classes); prepares the Debian one."""
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


def num_classes(
    name: str = DEFAULT_DATASET,
    data_dir: str | None = None,
    *,
    path: str = "",
    num_classes: int | None = None,
) -> int | None:
    """Number of label classes; None if the dataset has no labels.

    10 for "fashion_mnist" and `num_classes or 6` for "synthetic_shapes" (both known without
    preparing), None for "noto_emoji", "noto_emoji_segmentation" and "fashion_mnist_layout"
    (no image label; see `num_segmentation_classes` and `num_object_classes`); an image
    folder's from its sub-folders or metadata.jsonl (scanned, not decoded).
    """
    name = _check_name(name)
    if _is_debian(name):
        return len(fashion_mnist_idx.CLASS_NAMES)
    if _noto_config(name) is not None or name == FASHION_MNIST_LAYOUT:
        return None
    if name == SYNTHETIC_SHAPES:
        return int(num_classes or synthetic_shapes.DEFAULT_NUM_CLASSES)
    if name == IMAGE_FOLDER:
        return image_folder.plan_folder(path, 1).num_classes
    return dataset_summary(name, data_dir).num_classes


def num_segmentation_classes(name: str, *, num_classes: int | None = None) -> int | None:
    """Classes of the "segmentation" maps (the one-hot width of the semantic condition), known
    without preparing: 9 for "noto_emoji_segmentation", `num_classes + 1` for
    "synthetic_shapes" (default 6 + 1); None for datasets without maps."""
    name = _check_name(name)
    noto = _noto_config(name)
    if noto is not None and noto[0] == NOTO_EMOJI_SEGMENTATION:
        return emoji_palette.NUM_CLASSES
    if name == SYNTHETIC_SHAPES:
        return synthetic_shapes.num_segmentation_classes(
            int(num_classes or synthetic_shapes.DEFAULT_NUM_CLASSES)
        )
    return None


def num_object_classes(name: str) -> int | None:
    """Object classes of a layout dataset (10 for "fashion_mnist_layout", whose padding class is
    10); None for datasets without boxes."""
    if _check_name(name) == FASHION_MNIST_LAYOUT:
        return fashion_mnist_layout.NUM_CLASSES
    return None
