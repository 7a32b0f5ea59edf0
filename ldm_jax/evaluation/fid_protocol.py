"""The FID protocol around the Inception network: its input resizing, and FID, sFID and IS maths.

Part 1, images -> the network's input. Three protocols, named as clean-fid names them (Parmar
et al., "On Aliased Resizing and Surprising Subtleties in GAN Evaluation", CVPR 2022):

* `clean` (the default, clean-fid's): each uint8 channel becomes a float32 PIL image (mode
  'F'), is resized to 299x299 with PIL's bicubic filter (which low-pass filters when shrinking),
  and is clipped to [0, 255], with no quantisation back to uint8. The network input is then
  (x - 128) / 128, the scaling built into TensorFlow's Inception graph. Runs on the host (PIL).
* `legacy_pytorch` (pytorch-fid's `InceptionV3(resize_input=True, normalize_input=True)`):
  x / 255, then bilinear resizing to 299 (`align_corners=False`, no antialiasing), then 2x - 1.
  Runs inside the jitted program.
* `legacy_tensorflow` (TF1's graph as used by the original TTUR FID code and guided-diffusion's
  evaluator, whose inputs are fed unresized): TF1 `resize_bilinear` with `align_corners=False`
  and no half-pixel centres (source index = output index * in / out), then (x - 128) / 128.
  Runs inside the jitted program.

Every protocol takes images as [N, H, W, 3] (or [N, H, W] / [N, H, W, 1] grey, repeated to RGB)
with values in [0, 255]: uint8, or float already in that range (e.g. decoded samples mapped with
`(x + 1) * 127.5`; the clean protocol rounds those to uint8 first, as clean-fid reads PNGs,
unless they are already 299x299, e.g. `clean_resize`'s output).

Part 2, features -> numbers, float64 numpy: FID and sFID from feature sets (thin wrappers over
`metrics.frechet_distance`) or from saved statistics, and the Inception Score. A reference set
(e.g. the real training images) is reduced once to its statistics (`mu`, `sigma`) and saved as
`.npz` with guided-diffusion's reference-batch keys (`mu`, `sigma` for pool3; `mu_s`, `sigma_s`
for the spatial sFID features), so its published reference statistics load too (they were made
with TF's graph and the `legacy_tensorflow` resizing: compare like with like).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from PIL import Image

from ldm_jax.evaluation import metrics

INCEPTION_SIZE = 299
MODES = ("clean", "legacy_pytorch", "legacy_tensorflow")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"Unknown FID protocol {mode!r}; choose one of {', '.join(MODES)}.")
    return mode


def as_rgb_uint8(images: np.ndarray) -> np.ndarray:
    """[N, H, W(, 1 or 3)] in [0, 255] (uint8, or floats rounded and clipped) -> uint8 RGB."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"Expected images [N, H, W, 3] (or grey), got shape {x.shape}.")
    if x.dtype != np.uint8:
        x = np.clip(np.rint(x.astype(np.float64)), 0, 255).astype(np.uint8)
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def clean_resize(images: np.ndarray, size: int = INCEPTION_SIZE) -> np.ndarray:
    """clean-fid's resize: per-channel float32 PIL bicubic, clipped to [0, 255], not quantised.

    Args:
      images: uint8 [H, W, C] or [N, H, W, C].
      size: output height and width.

    Returns:
      float32 [size, size, C] or [N, size, size, C] in [0, 255].
    """
    image = np.asarray(images)
    if image.dtype != np.uint8 or image.ndim not in (3, 4):
        raise ValueError(
            f"clean_resize takes uint8 [H, W, C] or [N, H, W, C], got {image.dtype} {image.shape}."
        )
    if image.ndim == 4:
        out = np.zeros((len(image), size, size, image.shape[-1]), np.float32)
        for i, im in enumerate(image):
            out[i] = clean_resize(im, size)
        return out
    channels = []
    for c in range(image.shape[-1]):
        plane = Image.fromarray(image[..., c].astype(np.float32), mode="F")
        plane = plane.resize((size, size), resample=Image.BICUBIC)
        channels.append(np.asarray(plane, np.float32).clip(0, 255))  # [size, size]
    return np.stack(channels, axis=-1)


def host_preprocess(images: np.ndarray, mode: str) -> np.ndarray:
    """The part of a protocol that runs on the host: for `clean`, the PIL resize.

    Args:
      images: [N, H, W, 3] (or grey) in [0, 255].
      mode: one of `MODES`.

    Returns:
      float32 [N, 299, 299, 3] in [0, 255] for `clean`; float32 [N, H, W, 3] in [0, 255]
      (unresized) for the legacy protocols, which resize inside the network program.
    """
    check_mode(mode)
    x = np.asarray(images)
    if mode == "clean":
        if x.ndim == 4 and x.shape[1:] == (INCEPTION_SIZE, INCEPTION_SIZE, 3):
            # Already 299 px (e.g. `clean_resize`'s output): PIL's resize to the same size is
            # the identity, so this is what clean-fid computes; floats are kept unrounded.
            return x.astype(np.float32)
        return clean_resize(as_rgb_uint8(x))
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"Expected images [N, H, W, 3] (or grey), got shape {x.shape}.")
    x = x.astype(np.float32)
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def resize_bilinear_tf1(x: jnp.ndarray, size: int = INCEPTION_SIZE) -> jnp.ndarray:
    """TF1 `resize_bilinear(align_corners=False)` (no half-pixel centres) of [B, H, W, C].

    Output pixel i samples the input at i * in / out, interpolating between floor and the
    next pixel (clamped at the last row/column).
    """

    def axis_weights(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.arange(size, dtype=np.float64) * (n_in / size)
        lo = np.floor(src).astype(np.int32)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    h_lo, h_hi, h_w = axis_weights(x.shape[1])
    w_lo, w_hi, w_w = axis_weights(x.shape[2])
    rows = x[:, h_lo] * (1 - h_w)[None, :, None, None] + x[:, h_hi] * h_w[None, :, None, None]
    return (
        rows[:, :, w_lo] * (1 - w_w)[None, None, :, None]
        + rows[:, :, w_hi] * w_w[None, None, :, None]
    )


def network_input(x: jnp.ndarray, mode: str) -> jnp.ndarray:
    """The in-program part of a protocol: [B, H, W, 3] in [0, 255] (as `host_preprocess`
    returns) -> the network's input [B, 299, 299, 3] in [-1, 1] (float32). Jit-friendly."""
    check_mode(mode)
    x = x.astype(jnp.float32)
    if mode == "clean":
        if x.shape[1:3] != (INCEPTION_SIZE, INCEPTION_SIZE):
            raise ValueError(f"The clean protocol resizes on the host first; got {x.shape}.")
        return (x - 128.0) / 128.0
    if mode == "legacy_tensorflow":
        return (resize_bilinear_tf1(x) - 128.0) / 128.0
    x = x / 255.0
    # Half-pixel bilinear without antialiasing: torch's interpolate(align_corners=False).
    shape = (x.shape[0], INCEPTION_SIZE, INCEPTION_SIZE, x.shape[-1])
    x = jax.image.resize(x, shape, method="linear", antialias=False)
    return 2.0 * x - 1.0


class FeatureStats(NamedTuple):
    """Gaussian fitted to a feature set."""

    mu: np.ndarray  # [D] float64
    sigma: np.ndarray  # [D, D] float64, unbiased (N - 1) covariance as np.cov


def feature_stats(features: np.ndarray) -> FeatureStats:
    """Mean and covariance of [N, D] features (N >= 2), float64."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"Expected [N, D] features with N >= 2, got shape {x.shape}.")
    return FeatureStats(x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False)))


def frechet_distance_stats(a: FeatureStats, b: FeatureStats) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) from saved statistics
    (`metrics.frechet_distance_from_moments`, the same maths as `metrics.frechet_distance`)."""
    return metrics.frechet_distance_from_moments(a.mu, a.sigma, b.mu, b.sigma)


def fid_from_features(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID: the Fréchet distance of two `pool3` feature sets [N, 2048], [M, 2048]."""
    return metrics.frechet_distance(feats_a, feats_b)


def sfid_from_features(spatial_a: np.ndarray, spatial_b: np.ndarray) -> float:
    """sFID (Nash et al. 2021): the Fréchet distance of two `spatial` feature sets [N, 2023]."""
    return metrics.frechet_distance(spatial_a, spatial_b)


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """FID (or sFID) between two saved statistics."""
    return frechet_distance_stats(a, b)


def save_stats(
    path: str | os.PathLike, fid: FeatureStats, sfid: FeatureStats | None = None
) -> None:
    """Writes `mu`, `sigma` (and `mu_s`, `sigma_s` for sFID) to an `.npz` file."""
    arrays = {"mu": fid.mu, "sigma": fid.sigma}
    if sfid is not None:
        arrays.update(mu_s=sfid.mu, sigma_s=sfid.sigma)
    with open(path, "wb") as f:  # np.savez would append ".npz" to a path without it.
        np.savez(f, **{k: np.asarray(v, np.float64) for k, v in arrays.items()})


def load_stats(path: str | os.PathLike) -> tuple[FeatureStats, FeatureStats | None]:
    """Reads `save_stats`' file (or a guided-diffusion reference batch): (fid, sfid or None).

    Raises:
      FileNotFoundError / ValueError: a clear one-line message naming the file and the keys.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"No FID statistics at {path}; write them with save_stats.")
    with np.load(path) as data:
        keys = set(data.files)
        if not {"mu", "sigma"} <= keys:
            raise ValueError(f"{path} has keys {sorted(keys)}; FID statistics need mu and sigma.")
        fid = FeatureStats(data["mu"].astype(np.float64), data["sigma"].astype(np.float64))
        sfid = None
        if {"mu_s", "sigma_s"} <= keys:
            sfid = FeatureStats(data["mu_s"].astype(np.float64), data["sigma_s"].astype(np.float64))
    return fid, sfid


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))), mean and std over `splits` equal parts.

    The standard definition (Salimans et al. 2016, improved-GAN's code): softmax over the 1008
    outputs, p(y) the mean prediction of each part, parts taken in order. Pass
    `logits_unbiased` (the reference implementations' `softmax/logits/MatMul`, no bias) to match
    published numbers.

    Args:
      logits: [N, C] pre-softmax scores, N >= splits.
      splits: number of parts.

    Returns:
      (mean, std) of the per-part scores, float64.
    """
    z = np.asarray(logits, np.float64)
    if z.ndim != 2 or z.shape[0] < splits or splits < 1:
        raise ValueError(f"Need [N, C] logits with N >= splits={splits}, got shape {z.shape}.")
    log_p = z - scipy.special.logsumexp(z, axis=1, keepdims=True)  # [N, C]
    p = np.exp(log_p)
    n = z.shape[0]
    scores = []
    for k in range(splits):
        part = slice(k * n // splits, (k + 1) * n // splits)
        part_p, part_log = p[part], log_p[part]  # [n_k, C]
        p_y = part_p.mean(axis=0, keepdims=True)  # [1, C]
        log_p_y = np.log(np.where(p_y > 0, p_y, 1.0))
        kl = np.where(part_p > 0, part_p * (part_log - log_p_y), 0.0).sum(axis=1)  # [n_k]
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
