"""Config checks that look past the config: what the dataset holds (class labels, captions,
segmentation maps) and the devices and processes the run has (`validate_config`'s last pass)."""

from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections
import numpy as np

from ldm_jax.config.builders import condition_kind
from ldm_jax.config.errors import ConfigError, one_line, require, train_sections
from ldm_jax.config.model_config import has_model_section
from ldm_jax.config.options import mesh_config, train_options
from ldm_jax.data import datasets
from ldm_jax.parallel import sharding


def condition_kind_checked(config: ml_collections.ConfigDict) -> str:
    """`builders.condition_kind`, its refusal of a combination as a `ConfigError`."""
    try:
        return condition_kind(config)
    except ValueError as e:
        raise ConfigError(one_line(str(e))) from None


# What the built-in datasets hold (`data/datasets.py`), known without preparing them; other
# names (catalog datasets, an image folder) are checked when their data is read.
FASHION_MNIST_NAMES = ("fashion_mnist", "fashion_mnist_debian")
FASHION_MNIST_CLASSES = 10
UNLABELLED_DATASETS = (
    datasets.NOTO_EMOJI,
    datasets.NOTO_EMOJI_SEGMENTATION,
    datasets.FASHION_MNIST_LAYOUT,
)
UNCAPTIONED_DATASETS = FASHION_MNIST_NAMES
SEGMENTED_DATASETS = (datasets.NOTO_EMOJI_SEGMENTATION, datasets.SYNTHETIC_SHAPES)
BUILT_IN_DATASETS = FASHION_MNIST_NAMES + UNLABELLED_DATASETS + (datasets.SYNTHETIC_SHAPES,)
# Condition kinds (`builders.condition_kind`) that read each feature of the data.
LABEL_KINDS = ("class", "adm")
CAPTION_KINDS = ("text", "context", "hybrid_inpaint")


def validate_conditioning_data(config: ml_collections.ConfigDict, model: Any) -> None:
    """A condition needs data that has it: class labels (and a class table that holds every
    class), captions, segmentation maps."""
    data = config.data
    base = data.name.strip().partition("/")[0]
    if has_model_section(config):
        kind = condition_kind_checked(config)
    else:
        kind = "class" if config.conditioning.kind == "class" else "none"
    if kind in LABEL_KINDS:
        require(
            base not in UNLABELLED_DATASETS,
            "data.name",
            f"{data.name!r} has no class labels, which this {kind!r}-conditional model needs; "
            "use a labelled dataset (fashion_mnist, synthetic_shapes, an image_folder with "
            "class sub-folders).",
        )
        require(
            data.num_classes >= 1,
            "data.num_classes",
            f"is {data.num_classes}, but the model is conditioned on class labels; set it to "
            "the dataset's number of classes.",
        )
        if base in FASHION_MNIST_NAMES:
            require(
                data.num_classes >= FASHION_MNIST_CLASSES,
                "data.num_classes",
                f"is {data.num_classes}, but {data.name!r} has {FASHION_MNIST_CLASSES} classes; "
                f"labels past it would have no embedding: set it to {FASHION_MNIST_CLASSES}.",
            )
        if has_model_section(config):
            _validate_class_table(config, model, kind)
    if kind in CAPTION_KINDS and not config.train.get("fixed_text_context", False):
        require(
            base not in UNCAPTIONED_DATASETS,
            "data.name",
            f"{data.name!r} has no captions, which this text-conditional model ({kind!r}) "
            "needs; use a captioned dataset (noto_emoji, synthetic_shapes, an image_folder "
            "with captions).",
        )
    if kind == "semantic" and base in BUILT_IN_DATASETS:
        require(
            base in SEGMENTED_DATASETS,
            "data.name",
            f"{data.name!r} has no segmentation maps, which this semantic-synthesis model "
            "needs; use noto_emoji_segmentation or synthetic_shapes.",
        )


def _validate_class_table(config: ml_collections.ConfigDict, model: Any, kind: str) -> None:
    """The class embedding (or the U-Net's `num_classes`) holds every class of the data."""
    classes = config.data.num_classes
    if kind == "adm":
        table = model.unet.num_classes
        require(
            table is not None and table >= classes,
            "model.unet.num_classes",
            f"is {table!r}, but data.num_classes={classes}: the class embedding needs a row per "
            f"class; set it to {classes} (or more).",
        )
        return
    cond = model.cond_stage
    rows = cond.n_classes - int(cond.add_null_class)
    require(
        rows >= classes,
        "model.cond_stage.n_classes",
        f"is {cond.n_classes} (with add_null_class={cond.add_null_class}), fewer than "
        f"data.num_classes={classes} classes; set it to {classes + int(cond.add_null_class)}.",
    )


def _mesh_sizes(config: ml_collections.ConfigDict, num_devices: int) -> dict[str, int]:
    try:
        sizes = sharding.mesh_shape(mesh_config(config), num_devices)
    except ValueError as e:
        raise ConfigError(one_line(f"config.{e}")) from None
    return dict(zip(sharding.MESH_AXES, sizes, strict=True))


def _batch_axes(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The mesh axes the batch is split over (the rules' `batch` entry)."""
    for name, axes in sharding.logical_axis_rules(mesh_config(config)):
        if name == sharding.BATCH:
            axes = axes if isinstance(axes, tuple) else (axes,)
            return tuple(a for a in axes if a is not None)
    return ()


def validate_devices(
    config: ml_collections.ConfigDict, num_devices: int | None, num_processes: int | None
) -> None:
    """The mesh against the device count, and each trained batch against the devices it is
    split over, the processes that load it and the accumulation micro-batches (as the trainers'
    `sharded_stage.check_batch_size`, but before anything compiles)."""
    num_devices = jax.device_count() if num_devices is None else num_devices
    num_processes = jax.process_count() if num_processes is None else num_processes
    sizes = _mesh_sizes(config, num_devices)
    split = math.prod(sizes[a] for a in _batch_axes(config))
    for section in train_sections(config):
        if section == "autoencoder_train" and config.stage not in ("autoencoder", "both"):
            continue
        if section == "train" and config.stage == "autoencoder":
            continue
        batch = config[section].batch_size
        accum = train_options(config[section]).grad_accum_steps
        multiple = int(np.lcm(split * accum, num_processes * accum))
        require(
            batch % multiple == 0,
            f"{section}.batch_size",
            f"{batch} must be a multiple of {multiple} (the batch is split over {split} devices "
            f"of the mesh {sizes}, {num_processes} processes and {accum} accumulation "
            f"micro-batches); use {-(-batch // multiple) * multiple}.",
        )
