"""Fashion-MNIST CNN classifier used to judge generated samples.

The classifier scores class-conditional samples (is a requested "Sneaker" recognised as one?)
and supplies hidden features for a Fréchet distance. It trains from scratch on the Debian
Fashion-MNIST in about a minute and a half on a 2-core CPU (~91-92% test accuracy).

Train and cache it once with:

  python -m ldm_jax.evaluation.classifier [CACHE_DIR]
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app

from ldm_jax.data.fashion_mnist_idx import read_idx_arrays
from ldm_jax.evaluation.metrics import make_classify_fn
from ldm_jax.training import logging as log

NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 1)
PARAMS_FILE = "params.msgpack"
META_FILE = "meta.json"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "ldm_jax", "fashion_mnist_classifier")
TRAIN_HINT = (
    "Train one with `python -m ldm_jax.evaluation.classifier [CACHE_DIR]` or call "
    "ldm_jax.evaluation.classifier.get_or_train_classifier(cache_dir) (about 2 minutes on CPU)."
)

Params = Any  # A pytree of arrays.


def default_cache_dir() -> str:
    """Cache folder for the classifier (env `LDM_JAX_CLASSIFIER_DIR` overrides the default)."""
    return os.path.expanduser(os.environ.get("LDM_JAX_CLASSIFIER_DIR", DEFAULT_CACHE_DIR))


def preprocess_fashion_mnist(images: np.ndarray) -> np.ndarray:
    """Maps uint8 [N, 28, 28] images to float32 [N, 32, 32, 1] in [-1, 1], padded with -1.

    Args:
      images: uint8 [N, 28, 28] Fashion-MNIST images.

    Returns:
      float32 [N, 32, 32, 1]; the 28x28 image scaled to [-1, 1] with a 2-pixel border of -1.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"Expected uint8 [N, 28, 28], got {images.dtype} {images.shape}.")
    x = images.astype(np.float32) / 127.5 - 1.0  # [N, 28, 28]
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)), constant_values=-1.0)  # [N, 32, 32]
    return x[..., None]  # [N, 32, 32, 1]


class FashionClassifier(nn.Module):
    """Three stride-2 conv blocks -> dense "features" -> dense logits, on [B, 32, 32, 1] in [-1, 1].

    Attributes:
      widths: output channels of the stride-2 3x3 conv blocks.
      feature_dim: width of the hidden feature layer used for the Fréchet distance.
      num_classes: number of logits.
      dropout_rate: dropout on the features during training.
    """

    widths: tuple[int, ...] = (32, 64, 128)
    feature_dim: int = 128
    num_classes: int = NUM_CLASSES
    dropout_rate: float = 0.3

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, return_features: bool = False
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Classifies images.

        Args:
          x: float32 [B, 32, 32, 1] in [-1, 1].
          train: enables dropout (needs a "dropout" rng).
          return_features: also return the hidden features.

        Returns:
          logits float32 [B, num_classes], or `(logits, features [B, feature_dim])`.
        """
        h = x.astype(jnp.float32)  # [B, 32, 32, 1]
        for i, width in enumerate(self.widths):
            # Strided convs, not max-pooling: XLA's CPU max-pool gradient is ~10x slower.
            h = nn.relu(nn.Conv(width, (3, 3), strides=2, name=f"conv_{i}")(h))
            # h: [B, 32 / 2^(i+1), 32 / 2^(i+1), width]
        h = h.reshape(h.shape[0], -1)  # [B, (32 / 2^len(widths))^2 * widths[-1]]
        features = nn.relu(nn.Dense(self.feature_dim, name="features")(h))  # [B, F]
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
        logits = nn.Dense(self.num_classes, name="logits")(h)  # [B, num_classes]
        if return_features:
            return logits, features
        return logits


def init_params(model: FashionClassifier, seed: int = 0) -> Params:
    """Initialises the classifier's parameters for [1, 32, 32, 1] inputs."""
    dummy = jnp.zeros((1, *IMAGE_SHAPE), jnp.float32)
    return model.init(jax.random.key(seed), dummy)["params"]


def _augment(key: jax.Array, x: jax.Array, flip: bool, max_shift: int) -> jax.Array:
    """Random horizontal flips and random shifts of up to `max_shift` pixels (border -1)."""
    batch = x.shape[0]
    flip_key, shift_key = jax.random.split(key)
    if flip:
        do_flip = jax.random.bernoulli(flip_key, 0.5, (batch, 1, 1, 1))
        x = jnp.where(do_flip, x[:, :, ::-1, :], x)  # [B, 32, 32, 1]
    if max_shift:
        pad = ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0))
        padded = jnp.pad(x, pad, constant_values=-1.0)  # [B, 32 + 2s, 32 + 2s, 1]
        offsets = jax.random.randint(shift_key, (batch, 2), 0, 2 * max_shift + 1)  # [B, 2]
        crop = lambda img, off: jax.lax.dynamic_slice(img, (off[0], off[1], 0), IMAGE_SHAPE)
        x = jax.vmap(crop)(padded, offsets)  # [B, 32, 32, 1]
    return x


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy, float32 [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def accuracy(
    model: FashionClassifier, params: Params, images: np.ndarray, labels: np.ndarray
) -> float:
    """Fraction of `images` [N, 32, 32, 1] classified as `labels` [N]."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    logits, _ = make_classify_fn(model, params)(images)
    return float(np.mean(logits.argmax(-1) == np.asarray(labels)))


def train_classifier(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_steps: int = 3000,
    batch_size: int = 128,
    learning_rate: float = 3e-3,
    weight_decay: float = 1e-4,
    flip: bool = True,
    max_shift: int = 0,
    seed: int = 0,
    model: FashionClassifier | None = None,
    log_every: int = 0,
) -> tuple[Params, float]:
    """Trains the classifier with AdamW and a warmup-cosine schedule.

    Args:
      train_images: float32 [N, 32, 32, 1] in [-1, 1].
      train_labels: int [N] in [0, 10).
      test_images: float32 [M, 32, 32, 1] in [-1, 1].
      test_labels: int [M].
      num_steps: optimiser steps (3000 x 128 is about 6.4 epochs of the 60k training set).
      batch_size: examples per step.
      learning_rate: peak learning rate.
      weight_decay: decoupled weight decay.
      flip: augment with random horizontal flips.
      max_shift: augment with random shifts of up to this many pixels (0: off; shifts cost
        ~0.7 points of test accuracy at this training length).
      seed: seeds initialisation, batch order, augmentation and dropout.
      model: the module to train; defaults to `FashionClassifier()`.
      log_every: log the running loss every this many steps (0: silent).

    Returns:
      `(params, test_accuracy)`.
    """
    model = model or FashionClassifier()
    train_images = jnp.asarray(train_images, jnp.float32)  # [N, 32, 32, 1]
    train_labels = jnp.asarray(train_labels, jnp.int32)  # [N]
    n = train_images.shape[0]
    if n < batch_size:
        raise ValueError(f"Need at least batch_size={batch_size} training images, got {n}.")
    params = init_params(model, seed)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, min(100, num_steps // 10), num_steps, learning_rate * 0.01
    )
    tx = optax.adamw(schedule, weight_decay=weight_decay)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, idx, key):
        x, y = train_images[idx], train_labels[idx]  # [B, 32, 32, 1], [B]
        aug_key, dropout_key = jax.random.split(key)
        x = _augment(aug_key, x, flip, max_shift)

        def loss_fn(p):
            logits = model.apply({"params": p}, x, train=True, rngs={"dropout": dropout_key})
            return cross_entropy(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    key = jax.random.key(seed + 1)
    order, pos, running = rng.permutation(n), 0, []
    for step in range(num_steps):
        if pos + batch_size > n:
            order, pos = rng.permutation(n), 0
        idx = jnp.asarray(order[pos : pos + batch_size])
        pos += batch_size
        params, opt_state, loss = train_step(params, opt_state, idx, jax.random.fold_in(key, step))
        if log_every:
            running.append(loss)
            if (step + 1) % log_every == 0:
                log.info(
                    "classifier: step %d/%d loss %.4f", step + 1, num_steps, float(np.mean(running))
                )
                running = []
    return params, accuracy(model, params, test_images, test_labels)


def save_classifier(path: str, params: Params, meta: Mapping[str, Any]) -> None:
    """Writes `params.msgpack` and `meta.json` into the folder `path` (atomically per file)."""
    os.makedirs(path, exist_ok=True)
    files = {
        PARAMS_FILE: flax.serialization.to_bytes(params),
        META_FILE: json.dumps(dict(meta), indent=2, sort_keys=True).encode(),
    }
    for name, data in files.items():
        tmp = os.path.join(path, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(path, name))


def load_classifier(
    path: str, model: FashionClassifier | None = None
) -> tuple[Params, dict[str, Any]]:
    """Reads a classifier written by `save_classifier`.

    Args:
      path: folder holding `params.msgpack` and `meta.json`.
      model: module whose parameter structure the file must match; defaults to
        `FashionClassifier()`.

    Returns:
      `(params, meta)`.

    Raises:
      FileNotFoundError: no classifier in `path`.
      ValueError: the files are corrupt or hold a different architecture.
    """
    params_path, meta_path = os.path.join(path, PARAMS_FILE), os.path.join(path, META_FILE)
    for p in (params_path, meta_path):
        if not os.path.exists(p):
            raise FileNotFoundError(f"No trained classifier at {path} (missing {p}). {TRAIN_HINT}")
    template = init_params(model or FashionClassifier())
    try:
        with open(meta_path, "rb") as f:
            meta = json.loads(f.read())
        with open(params_path, "rb") as f:
            params = flax.serialization.from_bytes(template, f.read())
        shapes_ok = jax.tree.all(jax.tree.map(lambda a, b: a.shape == b.shape, template, params))
    except Exception as e:  # msgpack/JSON/structure errors all mean "unusable file".
        raise ValueError(
            f"Corrupt or incompatible classifier in {path} ({type(e).__name__}: "
            f"{e}). Delete it and retrain. {TRAIN_HINT}"
        ) from e
    if not shapes_ok or not isinstance(meta, dict):
        raise ValueError(
            f"Classifier in {path} does not match this architecture. Delete it and "
            f"retrain. {TRAIN_HINT}"
        )
    return jax.tree.map(jnp.asarray, params), meta


def get_or_train_classifier(
    cache_dir: str | None = None, **train_kwargs: Any
) -> tuple[Params, dict[str, Any]]:
    """Loads the cached classifier, or trains it on Fashion-MNIST and caches it.

    Args:
      cache_dir: folder for `params.msgpack`/`meta.json`; defaults to `default_cache_dir()`.
      **train_kwargs: JSON-serialisable keyword arguments (not `model`) forwarded to
        `train_classifier` when training is needed; recorded in `meta.json`.

    Returns:
      `(params, meta)`; `meta["test_accuracy"]` is the accuracy on the 10k test set.
    """
    if "model" in train_kwargs:
        raise ValueError("get_or_train_classifier always uses FashionClassifier().")
    cache_dir = cache_dir or default_cache_dir()
    model = FashionClassifier()
    if os.path.exists(os.path.join(cache_dir, PARAMS_FILE)):
        params, meta = load_classifier(cache_dir)
        log.info("Loaded classifier from %s: test accuracy %.4f", cache_dir, meta["test_accuracy"])
        return params, meta
    train_x, train_y = read_idx_arrays("train")
    test_x, test_y = read_idx_arrays("test")
    start = time.time()
    params, test_acc = train_classifier(
        preprocess_fashion_mnist(train_x),
        train_y,
        preprocess_fashion_mnist(test_x),
        test_y,
        **train_kwargs,
    )
    meta = {
        "test_accuracy": test_acc,
        "train_seconds": round(time.time() - start, 1),
        "train_kwargs": train_kwargs,
        "model": {f: getattr(model, f) for f in ("widths", "feature_dim", "dropout_rate")},
    }
    save_classifier(cache_dir, params, meta)
    log.info(
        "Trained classifier in %s s: test accuracy %.4f; saved to %s",
        meta["train_seconds"],
        test_acc,
        cache_dir,
    )
    return params, meta


def _main(argv: list[str]) -> None:
    log.show_own_status_only()
    get_or_train_classifier(argv[1] if len(argv) > 1 else None, log_every=200)


if __name__ == "__main__":
    app.run(_main)
