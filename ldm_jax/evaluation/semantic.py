"""Semantic synthesis on Noto emoji: does a sample have the colour map it was conditioned on?

`python -m ldm_jax.evaluate --workdir W --what semantic [--num N --steps S]` runs
`evaluate_workdir`. Protocol: the first `num` (default all 144) maps of the dataset's test split
(`noto_emoji_segmentation`: emoji never seen in training) are the conditions, one sample each
(unguided: concat conditions are never dropped in training; batch b draws its noise from
fold_in(PRNGKey(seed), b)). Each sample's map is re-derived by `emoji_palette.label_map_from_rgb`,
the labeller of the dataset's maps without the alpha channel (pure white is background, every
other colour the nearest CIELAB centroid), and scored against its conditioning map:

  mIoU  over the whole set, not per image: a confusion matrix C [9, 9] summed over every pixel of
      every image (rows the conditioning map's class, columns the re-derived one); class k's IoU
      is C[k, k] / (row k + column k - C[k, k]), and the mIoU averages it over the classes
      present in the conditioning maps (a class that is only predicted still lowers the IoU of
      the classes it was predicted in place of).
  pixel accuracy  trace(C) / sum(C).

Beside the samples, on the same maps:

  real_images  the real test images' re-derived maps against their own maps: the ceiling (about
      0.94 mIoU: white parts of an emoji read as background, and the alpha threshold and the
      white-as-background rule disagree on anti-aliased edges).
  shuffled_maps  the chance level: the same samples scored against the map of a different test
      emoji (a seeded derangement: a random cycle through all of them). A model that ignores its
      map scores this in expectation, whatever its samples look like, so the gap between
      `samples` and `shuffled_maps` is what the map contributes. (The real images scored against
      shuffled maps, `real_images_shuffled_maps`, is reported for context but is not a chance
      level: a generator that ignores the map can beat it, e.g. by always drawing a centred
      blob of the commonest colours.)
  first_stage_reconstructions  D(E(x)) of the real test images, re-derived and scored against
      their maps: what a perfect LDM decodes through this first stage.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ldm_jax.config import builders
from ldm_jax.config.model_config import model_config
from ldm_jax.config.validation import ConfigError
from ldm_jax.data import emoji_palette, noto_emoji_segmentation_builder, pipeline
from ldm_jax.evaluation.conditioned_samples import sample_per_condition
from ldm_jax.evaluation.reconstruction import reconstruct_images
from ldm_jax.sampling.images import to_uint8
from ldm_jax.workdir.reader import TrainedLDM, load_trained_ldm

NUM_CLASSES = emoji_palette.NUM_CLASSES  # 9
DATASET = noto_emoji_segmentation_builder.NAME


def confusion_matrix(
    target: np.ndarray, predicted: np.ndarray, num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """int64 [K, K]: pixels of target class i (row) labelled j (column), over every pixel.

    Args:
      target: int [..., H, W] class ids in [0, K).
      predicted: int, the same shape, class ids in [0, K).
    """
    target, predicted = np.asarray(target), np.asarray(predicted)
    if target.shape != predicted.shape:
        raise ValueError(f"Map shapes differ: {target.shape} vs {predicted.shape}.")
    for name, m in (("target", target), ("predicted", predicted)):
        if m.size and (m.min() < 0 or m.max() >= num_classes):
            raise ValueError(f"{name} map has a class outside [0, {num_classes}).")
    index = target.astype(np.int64).ravel() * num_classes + predicted.astype(np.int64).ravel()
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_scores(
    target: np.ndarray,
    predicted: np.ndarray,
    num_classes: int = NUM_CLASSES,
    class_names: tuple[str, ...] = emoji_palette.CLASS_NAMES,
) -> dict[str, Any]:
    """mIoU and pixel accuracy of `predicted` maps against `target` maps (module docstring).

    Args:
      target: int [N, H, W] (or any shape) class ids, the reference.
      predicted: int, the same shape.
      num_classes: K.
      class_names: K names for the per-class IoUs.

    Returns:
      {"miou", "pixel_accuracy", "classes_present", "per_class_iou": {name: IoU, or None for a
      class absent from the targets}}.
    """
    c = confusion_matrix(target, predicted, num_classes).astype(np.float64)  # [K, K]
    hits = np.diag(c)  # [K]
    union = c.sum(1) + c.sum(0) - hits  # [K]
    present = c.sum(1) > 0  # [K]: classes of the targets
    iou = np.where(present, hits / np.maximum(union, 1.0), np.nan)  # [K]
    total = c.sum()
    return {
        "miou": float(np.mean(iou[present])) if present.any() else float("nan"),
        "pixel_accuracy": float(hits.sum() / total) if total else float("nan"),
        "classes_present": int(present.sum()),
        "per_class_iou": {
            str(name): (None if np.isnan(v) else round(float(v), 4))
            for name, v in zip(class_names, iou, strict=True)
        },
    }


def derangement(n: int, seed: int) -> np.ndarray:
    """int [n]: a seeded permutation with no fixed point (one random cycle through all n)."""
    if n < 2:
        raise ValueError(f"A derangement needs at least 2 items, got {n}.")
    order = np.random.default_rng(seed).permutation(n)  # [n]
    out = np.empty(n, np.int64)
    out[order] = np.roll(order, -1)  # order[i] -> order[i + 1]
    return out


def rederived_maps(images: np.ndarray) -> np.ndarray:
    """Images float [N, H, W, 3] in [-1, 1] -> uint8 [N, H, W] maps (`label_map_from_rgb` of the
    images quantised to uint8, as a PNG would store them)."""
    return emoji_palette.label_map_from_rgb(to_uint8(images))


def check_semantic(config) -> None:
    """ConfigError unless the workdir holds a semantic-synthesis model on the emoji maps."""
    kind = builders.condition_kind(config)
    name = str(config.data.name).partition("/")[0]
    classes = (model_config(config).get("cond_stage") or {}).get("in_channels")
    if kind != "semantic" or name != DATASET or classes != NUM_CLASSES:
        raise ConfigError(
            f"--what semantic scores semantic synthesis on {DATASET!r} maps of {NUM_CLASSES} "
            f"classes (configs/tasks/emoji/semantic.py); this workdir's model is conditioned on "
            f"{kind!r} ({classes} map classes) and trained on {config.data.name!r}."
        )


def sample_maps(
    trained: TrainedLDM,
    maps: np.ndarray,
    *,
    sampler: str,
    steps: int,
    eta: float,
    seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:
    """One unguided sample per map int [N, H, W]: images float32 [N, H, W, 3] in [-1, 1] (the
    maps one-hot [N, H, W, 9], as the trainer and the sample CLI feed them)."""
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[np.asarray(maps)]  # [N, H, W, K]
    return sample_per_condition(
        trained, onehot, None, sampler=sampler, steps=steps, guidance=1.0, eta=eta, seed=seed,
        batch_size=batch_size,
    )  # fmt: skip


def evaluate_workdir(
    workdir: str,
    *,
    num: int | None = None,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """mIoU of a semantic-synthesis workdir's samples beside its baselines (module docstring).

    Raises:
      ConfigError: the workdir is not a semantic model on noto_emoji_segmentation, or `num` < 2.
    """
    trained = load_trained_ldm(workdir)
    config, s = trained.config, trained.config.sample
    check_semantic(config)
    if num is not None and num < 2:
        raise ConfigError(f"--num must be at least 2 (the chance level shuffles maps), got {num}.")
    sampler, steps = sampler or s.sampler, steps or s.steps
    eta = s.eta if eta is None else eta
    d = config.data
    source = builders.build_data_source(config, "test")
    test = pipeline.load_split_dict(source, d.image_size, d.channels, max_examples=num)
    maps = test["segmentation"]  # [N, S, S] int32
    real = test["image"]  # [N, S, S, 3] in [-1, 1]
    start = time.perf_counter()
    samples = sample_maps(
        trained, maps, sampler=sampler, steps=steps, eta=eta, seed=seed, batch_size=batch_size
    )
    sampling_s = time.perf_counter() - start
    start = time.perf_counter()
    sample_maps_ = rederived_maps(samples)  # [N, S, S]
    real_maps = rederived_maps(real)
    other = derangement(len(maps), seed)  # [N]
    result = {
        "samples": segmentation_scores(maps, sample_maps_),
        "real_images": segmentation_scores(maps, real_maps),
        "shuffled_maps": segmentation_scores(maps[other], sample_maps_),
        "real_images_shuffled_maps": segmentation_scores(maps[other], real_maps),
        "first_stage_reconstructions": segmentation_scores(
            maps, rederived_maps(reconstruct_images(trained, real, batch_size))
        ),
    }
    protocol = {
        "split": "test",
        "num_maps": int(len(maps)),
        "samples_per_map": 1,
        "seed": seed,
        "sampler": sampler,
        "steps": int(steps),
        "eta": float(eta),
        "guidance": None,  # unguided: concat conditions are never dropped in training
        "labeller": "emoji_palette.label_map_from_rgb of the uint8 image (white = background)",
        "miou": "per-class IoU over the whole set's confusion matrix, mean over the classes "
        "present in the conditioning maps",
        "chance": "the samples against the map of a different test emoji (seeded derangement)",
        "ceiling": "the real test images' re-derived maps against their own maps",
    }
    return {
        "what": "semantic",
        "metric": "mIoU of the samples' re-derived colour maps against the conditioning maps",
        "workdir": workdir,
        "ldm_step": trained.step,
        "miou": result["samples"]["miou"],  # the headline figure
        "pixel_accuracy": result["samples"]["pixel_accuracy"],
        "ceiling": result["real_images"]["miou"],
        "chance": result["shuffled_maps"]["miou"],
        "protocol": protocol,
        **result,
        "seconds": {
            "sampling": round(sampling_s, 1),
            "scoring": round(time.perf_counter() - start, 1),
        },
    }
