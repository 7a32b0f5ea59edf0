"""Layout-to-image accuracy: is the item inside each requested box of the requested class?

Protocol (`evaluate_workdir`): the first `num` canvases of the dataset's test split give the
layouts (classes and boxes, never seen in training: the test canvases hold only Fashion-MNIST
test items). One sample per layout is drawn (one compiled batch shape, seeded). Every object box
of every sample is cropped (pixel edges floor(x0 * W) .. ceil(x1 * W), likewise y), turned grey
(channel mean), padded to a square with black (-1) around its centre, resized to 28 x 28
(bilinear) and padded by 2 px to the classifier's 32 x 32 (as `classifier.preprocess_fashion_mnist`
frames a Fashion-MNIST image), then classified by the project's Fashion-MNIST classifier
(`classifier.get_or_train_classifier`). Accuracy is the fraction of objects classified as their
requested class; chance is 1/10. The same procedure on the real test canvases gives the ceiling
that the crop procedure allows (items shrunk to 30-50 % of a 32 px canvas lose detail).
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from ldm_jax.config import builders
from ldm_jax.config.validation import ConfigError
from ldm_jax.data import layout_tokens, pipeline
from ldm_jax.evaluation import classifier as clf
from ldm_jax.evaluation.conditioned_samples import sample_per_condition
from ldm_jax.workdir.reader import TrainedLDM, load_trained_ldm

ITEM_SIDE = 28  # a Fashion-MNIST item's side, framed by 2 px to the classifier's 32


def pixel_box(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """Normalised (x0, y0, x1, y1) -> pixel edges (top, left, bottom, right), at least 1 px."""
    x0, y0, x1, y1 = (float(v) for v in box)
    left, top = (
        min(int(math.floor(x0 * width)), width - 1),
        min(int(math.floor(y0 * height)), height - 1),
    )
    right = max(min(int(math.ceil(x1 * width)), width), left + 1)
    bottom = max(min(int(math.ceil(y1 * height)), height), top + 1)
    return top, left, bottom, right


def crop_item(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """float [H, W, C] in [-1, 1] and a normalised box -> float32 [32, 32, 1], framed as the
    classifier's inputs (see the module doc)."""
    top, left, bottom, right = pixel_box(box, *image.shape[:2])
    crop = np.asarray(image, np.float32)[top:bottom, left:right].mean(-1)  # [h, w]
    h, w = crop.shape
    side = max(h, w)
    square = np.full((side, side), -1.0, np.float32)
    square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = crop
    resized = Image.fromarray(square, mode="F").resize(
        (ITEM_SIDE, ITEM_SIDE), Image.Resampling.BILINEAR
    )
    item = np.clip(np.asarray(resized, np.float32), -1.0, 1.0)  # [28, 28]
    pad = (clf.IMAGE_SHAPE[0] - ITEM_SIDE) // 2
    return np.pad(item, pad, constant_values=-1.0)[..., None]  # [32, 32, 1]


def crop_objects(
    images: np.ndarray, boxes: np.ndarray, num_objects: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every object of a batch of layouts, cropped.

    Args:
      images: float [N, H, W, C] in [-1, 1].
      boxes: float [N, M, 4] normalised (x0, y0, x1, y1).
      num_objects: int [N] objects per image.

    Returns:
      (crops float32 [K, 32, 32, 1], (image, object) indices int32 [K, 2]), K = sum(num_objects).
    """
    crops, index = [], []
    for i, (image, n) in enumerate(zip(images, np.asarray(num_objects), strict=True)):
        for j in range(int(n)):
            crops.append(crop_item(image, boxes[i, j]))
            index.append((i, j))
    if not crops:
        return np.zeros((0, *clf.IMAGE_SHAPE), np.float32), np.zeros((0, 2), np.int32)
    return np.stack(crops), np.asarray(index, np.int32)


def classify(params: Any, crops: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """int32 [K] predicted classes of crops [K, 32, 32, 1]."""
    model = clf.FashionClassifier()
    apply = jax.jit(lambda p, x: jnp.argmax(model.apply({"params": p}, x), -1))
    out = [
        np.asarray(apply(params, crops[s : s + batch_size]))
        for s in range(0, len(crops), batch_size)
    ]
    return np.concatenate(out).astype(np.int32) if out else np.zeros((0,), np.int32)


def object_accuracy(
    params: Any, images: np.ndarray, classes: np.ndarray, boxes: np.ndarray, num_objects: np.ndarray
) -> dict[str, Any]:
    """{"accuracy", "num_objects"} of the items inside the boxes of `images` (see module doc)."""
    crops, index = crop_objects(images, boxes, num_objects)
    predicted = classify(params, crops)
    wanted = np.asarray(classes)[index[:, 0], index[:, 1]] if len(index) else predicted
    accuracy = float(np.mean(predicted == wanted)) if len(index) else float("nan")
    return {"accuracy": accuracy, "num_objects": int(len(index))}


def sample_layouts(
    trained: TrainedLDM,
    tokens: np.ndarray,
    *,
    sampler: str,
    steps: int,
    guidance: float,
    eta: float,
    seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:
    """One sample per layout of tokens [N, L]: images float32 [N, H, W, C] in [-1, 1] (the last
    batch is padded by repeating its last layout, so one batch shape compiles)."""
    vocab = builders.layout_vocab(trained.config)
    uncond = builders.null_layout(vocab)  # [1, L]
    return sample_per_condition(
        trained, tokens, uncond, sampler=sampler, steps=steps, guidance=guidance, eta=eta,
        seed=seed, batch_size=batch_size,
    )  # fmt: skip


def evaluate_workdir(
    workdir: str,
    *,
    num: int | None = None,
    seed: int = 0,
    guidance: float | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    batch_size: int = 64,
    classifier_dir: str | None = None,
) -> dict[str, Any]:
    """Layout accuracy of a layout workdir's samples beside the real test canvases' (module doc).

    Raises:
      ConfigError: the workdir does not hold a layout model.
    """
    start = time.time()
    trained = load_trained_ldm(workdir)
    config = trained.config
    if not builders.is_layout_model(config):
        raise ConfigError(
            "--what layout scores layout-to-image models (cond_stage kind 'bert' with "
            "use_tokenizer=False on a dataset with boxes, e.g. "
            "configs/tasks/fashion_mnist/layout2img.py)."
        )
    d, s = config.data, config.sample
    source = builders.build_data_source(config, "test")
    test = pipeline.load_split_dict(source, d.image_size, d.channels, max_examples=num or None)
    vocab = builders.layout_vocab(config)
    tokens = layout_tokens.encode(test["classes"], test["boxes"], test["num_objects"], vocab)
    guidance = s.guidance_scale if guidance is None else guidance
    sampler, steps = sampler or s.sampler, steps or s.steps
    eta = s.eta if eta is None else eta
    samples = sample_layouts(
        trained, tokens, sampler=sampler, steps=steps, guidance=guidance, eta=eta, seed=seed,
        batch_size=batch_size,
    )  # fmt: skip
    params, meta = clf.get_or_train_classifier(classifier_dir)
    layout = (test["classes"], test["boxes"], test["num_objects"])
    result = object_accuracy(params, samples, *layout)
    return {
        "accuracy": result["accuracy"],
        "chance": 1.0 / clf.NUM_CLASSES,
        "real_test_canvases": object_accuracy(params, test["image"], *layout)["accuracy"],
        "num_layouts": int(len(tokens)),
        "num_objects": result["num_objects"],
        "classifier_test_accuracy": meta["test_accuracy"],
        "protocol": {
            "split": "test",
            "seed": seed,
            "sampler": sampler,
            "steps": int(steps),
            "eta": float(eta),
            "guidance": float(guidance),
            "crop": "box pixel edges, grey, black-padded square, 28x28 bilinear, 2 px frame",
        },
        "ldm_step": trained.step,
        "seconds": round(time.time() - start, 1),
    }
