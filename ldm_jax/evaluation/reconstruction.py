"""How well a first stage reconstructs held-out images: PSNR, SSIM, LPIPS, codebook use, FD.

For images x in [-1, 1] and reconstructions x~ = D(E(x)) (the posterior mean of a KL model, the
quantised code of a VQ model), clipped to [-1, 1]:
  psnr_db      10 log10(4 / mean (x - x~)^2), averaged over images (`losses.autoencoder_loss`);
  ssim         Gaussian-window SSIM (Wang et al. 2004: 11x11 window, sigma 1.5, K1 = 0.01,
               K2 = 0.03) on images mapped to [0, 1], over valid window positions, averaged over
               channels, then over images;
  lpips_vgg    LPIPS v0.1 with the VGG16 backbone (`losses.lpips`), averaged over images;
  fd           Frechet distance between the features of the real and the reconstructed images,
               in a feature space the caller chooses (`fd_features` names it);
  VQ models:   codebook_usage, the fraction of the `n_embed` codes chosen at least once over the
               whole evaluated set, and codebook_perplexity, exp of the entropy of the code
               frequencies (n_embed when all codes are equally used).

`evaluate_workdir` reads a workdir's first stage and test split; `python -m ldm_jax.evaluate
--what reconstruction` prints its result.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ldm_jax.config import builders
from ldm_jax.config.validation import ConfigError
from ldm_jax.data import pipeline
from ldm_jax.evaluation import classifier as clf
from ldm_jax.evaluation import metrics
from ldm_jax.losses import lpips
from ldm_jax.losses.autoencoder_loss import psnr
from ldm_jax.models.vq_autoencoder import VQModel
from ldm_jax.workdir import reader

# images float32 [N, H, W, C] in [-1, 1] -> features [N, D].
FeatureFn = Callable[[np.ndarray], np.ndarray]
FEATURES = ("auto", "classifier", "lpips_vgg", "none")
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian [size] whose outer product is the SSIM window."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    w = np.exp(-0.5 * (r / sigma) ** 2)
    return (w / w.sum()).astype(np.float32)


def _filter_valid(x: jax.Array, window: np.ndarray) -> jax.Array:
    """Separable 2-D filtering of every channel, valid positions only.

    Args:
      x: [B, H, W, C] float32.
      window: [k] float32 1-D taps.

    Returns:
      [B, H - k + 1, W - k + 1, C] float32.
    """
    c, k = x.shape[-1], len(window)
    w = jnp.asarray(window)
    conv = functools.partial(
        jax.lax.conv_general_dilated,
        window_strides=(1, 1),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c,
        precision=jax.lax.Precision.HIGHEST,
    )
    x = conv(x, jnp.broadcast_to(w.reshape(k, 1, 1, 1), (k, 1, 1, c)))
    return conv(x, jnp.broadcast_to(w.reshape(1, k, 1, 1), (1, k, 1, c)))


def ssim(x: jax.Array, x_rec: jax.Array) -> jax.Array:
    """Mean Gaussian-window SSIM per image (see the module docstring).

    Args:
      x: [B, H, W, C] reference images in [-1, 1]; H, W >= 11.
      x_rec: [B, H, W, C] images to score; clipped to [-1, 1] first.

    Returns:
      [B] float32 (1 for identical images).
    """
    if x.shape != x_rec.shape or x.ndim != 4 or min(x.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs two [B, H, W, C] images with H, W >= {SSIM_WINDOW}; got {x.shape} and "
            f"{x_rec.shape}."
        )
    a = (x.astype(jnp.float32) + 1.0) / 2.0  # [B, H, W, C] in [0, 1]
    b = (jnp.clip(x_rec.astype(jnp.float32), -1.0, 1.0) + 1.0) / 2.0
    # Moments of the images less their means (m_a, m_b [B, 1, 1, C]): (co)variances do not
    # change, and float32 loses far less to E[a^2] - E[a]^2 cancellation.
    m_a, m_b = jnp.mean(a, axis=(1, 2), keepdims=True), jnp.mean(b, axis=(1, 2), keepdims=True)
    a, b = a - m_a, b - m_b
    c = a.shape[-1]
    stats = _filter_valid(jnp.concatenate([a, b, a * a, b * b, a * b], -1), gaussian_window())
    mu_a, mu_b, e_aa, e_bb, e_ab = (stats[..., i * c : (i + 1) * c] for i in range(5))
    var_a, var_b = e_aa - mu_a**2, e_bb - mu_b**2  # [B, h, w, C]
    cov = e_ab - mu_a * mu_b
    mu_a, mu_b = mu_a + m_a, mu_b + m_b  # Local means of the images themselves.
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # Data range 1.
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return jnp.mean(num / den, axis=(1, 2, 3))


def reconstruct(ae: Any, params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """D(E(x)) with the posterior mean (KL) or the nearest codes (VQ), and the VQ code indices.

    Args:
      ae: a first-stage module (`AutoencoderKL`, `VQModel`, or one whose `__call__(x)` returns
        the reconstruction or a tuple starting with it).
      params: its parameters.
      x: [B, H, W, C] images in [-1, 1].

    Returns:
      (x_rec [B, H, W, C] float32, indices [B, h, w] int32 for VQ models else None).
    """
    out = ae.apply({"params": params}, x)
    if isinstance(ae, VQModel):
        return out[0].astype(jnp.float32), out[2]
    rec = out[0] if isinstance(out, tuple) else out
    return rec.astype(jnp.float32), None


def reconstruct_images(trained: Any, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """D(E(x)) [N, H, W, C] float32 in [-1, 1] of images [N, H, W, C] by a workdir's first stage
    (`reader.TrainedLDM`; the posterior mean for KL). One batch shape compiles: the last batch is
    zero-padded."""
    ae = builders.build_autoencoder(trained.config)
    apply = jax.jit(lambda p, x: jnp.clip(reconstruct(ae, p, x)[0], -1.0, 1.0))
    b = min(batch_size, len(images))
    out = []
    for start in range(0, len(images), b):
        x = np.asarray(images[start : start + b], np.float32)
        padded = np.pad(x, ((0, b - len(x)),) + ((0, 0),) * 3)
        out.append(np.asarray(apply(trained.ae_params, padded))[: len(x)])
    return np.concatenate(out).astype(np.float32)


def _batch_metrics(ae: Any, lpips_net: str | None):
    """Jitted (ae_params, lpips_params, x) -> ({psnr, ssim[, lpips]} [B] each, x_rec, indices)."""

    def fn(ae_params, lpips_params, x):
        rec, indices = reconstruct(ae, ae_params, x)
        clipped = jnp.clip(rec, -1.0, 1.0)
        scores = {"psnr_db": psnr(x, rec), "ssim": ssim(x, rec)}
        if lpips_net is not None:
            scores[f"lpips_{lpips_net}"] = lpips.lpips_distance(lpips_params, x, clipped, lpips_net)
        return scores, clipped, indices

    return jax.jit(fn)


def _pad_to(x: np.ndarray, size: int) -> np.ndarray:
    """x [n, ...] padded with zeros to [size, ...] (one compiled shape for a short last batch)."""
    if len(x) > size:
        raise ValueError(f"Batch of {len(x)} images after a first batch of {size}.")
    return np.concatenate([x, np.zeros((size - len(x), *x.shape[1:]), x.dtype)])


def batched_features(apply: Callable[[jax.Array], jax.Array], batch_size: int) -> FeatureFn:
    """Turns a jitted [b, ...] -> [b, D] function into a `FeatureFn` over any number of images.

    Every call runs on batches of exactly `batch_size` (the last one padded), so it compiles once.
    """

    def features(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float32)
        out = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            out.append(np.asarray(apply(_pad_to(chunk, batch_size)))[: len(chunk)])
        return np.concatenate(out)

    return features


def lpips_feature_fn(net: str = "vgg16", batch_size: int = 64) -> FeatureFn:
    """Pooled LPIPS features (`losses.lpips.LPIPS.pooled_features`), [N, 1472] for VGG16."""
    params = lpips.load_lpips_params(net)
    apply = jax.jit(functools.partial(lpips.lpips_pooled_features, net=net))
    return batched_features(lambda x: apply(params, x), batch_size)


def classifier_feature_fn(classifier_dir: str | None = None, batch_size: int = 64) -> FeatureFn:
    """Hidden features [N, 128] of the project's Fashion-MNIST classifier (trained on first use).

    Images must be [N, 32, 32, 1] in [-1, 1], as the quickstart's.
    """
    params, _ = clf.get_or_train_classifier(classifier_dir)
    classify = metrics.make_classify_fn(clf.FashionClassifier(), params, batch_size=batch_size)

    def features(images: np.ndarray) -> np.ndarray:
        if tuple(np.shape(images)[1:]) != clf.IMAGE_SHAPE:
            raise ValueError(
                f"The Fashion-MNIST classifier takes [N, 32, 32, 1] images, got "
                f"{np.shape(images)}; use LPIPS-VGG features instead."
            )
        return classify(images)[1]

    return features


def _images(batch: Any) -> np.ndarray:
    """A batch given as an array or as a dict with "image"."""
    return np.asarray(batch["image"] if isinstance(batch, dict) else batch, np.float32)


def evaluate_reconstruction(
    ae: Any,
    ae_params: Any,
    batches: Iterable[Any],
    feature_fn: FeatureFn | None = None,
    feature_name: str = "",
    lpips_net: str | None = "vgg16",
) -> dict[str, Any]:
    """Scores reconstructions of every image the batches hold (see the module docstring).

    Args:
      ae: the first-stage module; `ae_params` its parameters.
      batches: float32 [B, H, W, C] arrays in [-1, 1] (or dicts with "image"); later batches
        may be smaller than the first (they are padded to its size: one compilation).
      feature_fn: features for the Frechet distance (None: no `fd`).
      feature_name: what `feature_fn` computes, reported as `fd_features`.
      lpips_net: LPIPS backbone ("vgg16" or "alexnet"), or None to skip LPIPS.

    Returns:
      JSON-able {"num_images", "psnr_db", "ssim", "lpips_<net>", "fd", "fd_features"} plus, for
      VQ models, "codebook_size", "codebook_usage", "codebook_perplexity".
    """
    step = _batch_metrics(ae, lpips_net)
    lpips_params = lpips.load_lpips_params(lpips_net) if lpips_net is not None else None
    sums: dict[str, float] = {}
    counts = np.zeros((ae.n_embed,), np.int64) if isinstance(ae, VQModel) else None
    real_feats, rec_feats = [], []
    n = size = 0
    for batch in batches:
        x = _images(batch)
        size = size or len(x)
        scores, rec, indices = step(ae_params, lpips_params, _pad_to(x, size))
        for key, value in scores.items():
            sums[key] = sums.get(key, 0.0) + float(np.sum(np.asarray(value, np.float64)[: len(x)]))
        if counts is not None:
            counts += np.bincount(np.asarray(indices)[: len(x)].ravel(), minlength=len(counts))
        if feature_fn is not None:
            real_feats.append(feature_fn(x))
            rec_feats.append(feature_fn(np.asarray(rec)[: len(x)]))
        n += len(x)
    if n == 0:
        raise ValueError("No images to evaluate.")
    result: dict[str, Any] = {"num_images": n, **{k: v / n for k, v in sums.items()}}
    if feature_fn is not None:
        fd = metrics.frechet_distance(np.concatenate(real_feats), np.concatenate(rec_feats))
        result.update(fd=fd, fd_features=feature_name)
    if counts is not None:
        result.update(codebook_stats(counts))
    return result


def codebook_stats(counts: np.ndarray) -> dict[str, Any]:
    """Usage and perplexity of a codebook from its code counts [n_embed]."""
    counts = np.asarray(counts, np.float64)
    p = counts / max(counts.sum(), 1.0)
    entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
    return {
        "codebook_size": int(len(counts)),
        "codebook_usage": float(np.mean(counts > 0)),
        "codebook_perplexity": float(np.exp(entropy)),
    }


def choose_features(config: ml_collections.ConfigDict, features: str) -> str:
    """ "classifier" for 32x32 grey Fashion-MNIST, else "lpips_vgg", when `features` is "auto"."""
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}.")
    if features != "auto":
        return features
    d = config.data
    fashion = d.name == "fashion_mnist" and d.image_size == 32 and d.get("channels", 1) == 1
    return "classifier" if fashion else "lpips_vgg"


def evaluate_workdir(
    workdir: str,
    num: int | None = None,
    split: str = "test",
    batch_size: int = 64,
    features: str = "auto",
    classifier_dir: str | None = None,
) -> dict[str, Any]:
    """Reconstruction figures of a workdir's first stage on `num` images of a data split.

    Only `config.json` and `checkpoints/autoencoder` are read: a workdir with no LDM yet works.

    Args:
      workdir: a training workdir (or a converted one whose config names a dataset).
      num: the first `num` images of the split (None: all).
      split: the data split, in the dataset's split syntax.
      batch_size: images per compiled batch.
      features: FD feature space, one of `FEATURES` ("auto": see `choose_features`).
      classifier_dir: cache of the Fashion-MNIST classifier (default: its own).

    Returns:
      `evaluate_reconstruction`'s dict with "split" added.
    """
    config = reader.load_config(workdir)
    if config.data.name == "imported":
        raise ConfigError(
            f"{workdir} holds imported weights (config.data.name='imported') and names no "
            "dataset to reconstruct; evaluate a workdir trained here, or call "
            "ldm_jax.evaluation.reconstruction.evaluate_reconstruction on your own images."
        )
    ae_params = reader.load_first_stage_params(workdir, config)
    ae = builders.build_autoencoder(config)
    d = config.data
    source = builders.build_data_source(config, split)
    images = pipeline.load_split_dict(source, d.image_size, d.get("channels"), max_examples=num)[
        "image"
    ]  # [N, H, W, C]
    kind = choose_features(config, features)
    feature_fn = None
    if kind == "classifier":
        feature_fn = classifier_feature_fn(classifier_dir, batch_size)
    elif kind == "lpips_vgg":
        feature_fn = lpips_feature_fn("vgg16", batch_size)
    batches = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    result = evaluate_reconstruction(
        ae, ae_params, batches, feature_fn, kind if feature_fn else "", lpips_net="vgg16"
    )
    return {"split": split, **result}
