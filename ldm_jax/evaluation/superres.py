"""Super-resolution fidelity of a concat super-resolution workdir on held-out test images.

`python -m ldm_jax.evaluate --workdir W --what superres [--num N --steps S]` runs
`evaluate_workdir`. Protocol: the first `num` (default 1000) images x of the workdir dataset's
test split (Fashion-MNIST for `configs/tasks/fashion_mnist/superres_x4.py`; images never seen in
training) are degraded to their low-resolution inputs exactly as training makes them
(`data/degradations.degrade` by the first stage's f with `train.superres_degradation`; bicubic is
deterministic, bsr_light is drawn from PRNGKey(seed)), kept in float (no 8-bit rounding, as in
the train step). One super-resolved sample per input is drawn, unguided (concat conditions have
no unconditional branch), with the workdir config's sampler, steps and eta unless given; batch i
draws its noise from fold_in(PRNGKey(seed), i). Every output is scored against its x:

  psnr_db      10 log10(4 / mean (x - y)^2) per image in [-1, 1] (`losses.autoencoder_loss.psnr`,
               MSE floored at 1e-12, so identical images score 126.0 dB), averaged over images;
  ssim         Gaussian-window SSIM (`reconstruction.ssim`), averaged over images;
  lpips_vgg    LPIPS v0.1 with the VGG16 backbone (`losses.lpips`; grey images repeated to three
               channels), averaged over images;
  low_res_psnr_db  (bicubic degradation only) PSNR between the output down-sampled again by the
               training degradation and the low-res input: how well it agrees with its input;
  class_accuracy   (32x32 grey Fashion-MNIST only) the fraction of outputs that the project's
               Fashion-MNIST classifier assigns the test image's label (the real images' own
               accuracy is reported beside it as "ground_truth").

Beside the samples ("ldm"), the same figures for three references on the same inputs:
  bicubic        `jax.image.resize(low, 4x, "bicubic")` (Keys cubic, a = -0.5, half-pixel
                 centres, weights renormalised at the borders; no antialiasing when enlarging);
  nearest        each low-res pixel repeated f x f;
  reconstruction D(E(x)) of the ground truth by the workdir's first stage (the posterior mean):
                 the ceiling of a perfect LDM, which can only produce decodable images.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.config import builders
from ldm_jax.config.validation import ConfigError
from ldm_jax.data import degradations, pipeline
from ldm_jax.evaluation import classifier as clf
from ldm_jax.evaluation import metrics
from ldm_jax.evaluation.conditioned_samples import sample_per_condition
from ldm_jax.evaluation.reconstruction import SSIM_WINDOW, reconstruct_images, ssim
from ldm_jax.losses import lpips
from ldm_jax.losses.autoencoder_loss import psnr
from ldm_jax.workdir.reader import load_trained_ldm

DEFAULT_NUM = 1000
METHODS = ("ldm", "bicubic", "nearest", "reconstruction")
LPIPS_NET = "vgg16"
# references [B, H, W, C], outputs [B, H, W, C] -> {metric: [B]}
ScoreFn = Callable[[jax.Array, jax.Array], dict[str, jax.Array]]


def degradation(config: Any) -> str:
    """How the workdir's model was trained to see its inputs (`train.superres_degradation`)."""
    return str((config.get("train") or {}).get("superres_degradation", "bicubic"))


def upsample_bicubic(low: np.ndarray, f: int) -> np.ndarray:
    """[N, h, w, C] -> float32 [N, f h, f w, C] by `jax.image.resize` "bicubic", clipped to
    [-1, 1] (the cubic kernel overshoots at edges)."""
    n, h, w, c = low.shape
    up = jax.image.resize(jnp.asarray(low, jnp.float32), (n, h * f, w * f, c), "bicubic")
    return np.clip(np.asarray(up, np.float32), -1.0, 1.0)


def upsample_nearest(low: np.ndarray, f: int) -> np.ndarray:
    """[N, h, w, C] -> float32 [N, f h, f w, C], each pixel repeated f x f."""
    return np.repeat(np.repeat(np.asarray(low, np.float32), f, axis=1), f, axis=2)


def make_score_fn(lpips_params: Any | None) -> ScoreFn:
    """Jitted per-image psnr_db, ssim (images of at least 11 x 11) and (with `lpips_params`)
    lpips_vgg of outputs against references, both [B, H, W, C] in [-1, 1]."""

    @jax.jit
    def scores(x: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
        y = jnp.clip(y, -1.0, 1.0)
        out = {"psnr_db": psnr(x, y)}
        if min(x.shape[1:3]) >= SSIM_WINDOW:
            out["ssim"] = ssim(x, y)
        if lpips_params is not None:
            out["lpips_vgg"] = lpips.lpips_distance(lpips_params, x, y, LPIPS_NET)
        return out

    return scores


def mean_scores(
    score_fn: ScoreFn, references: np.ndarray, outputs: np.ndarray, batch_size: int
) -> dict[str, float]:
    """Each metric of `score_fn` averaged over images (float64 sums). Every batch has
    `batch_size` rows (the last one padded with zeros and cut): one compilation."""
    if references.shape != outputs.shape:
        raise ValueError(f"Outputs {outputs.shape} differ from references {references.shape}.")
    sums: dict[str, float] = {}
    b = min(batch_size, len(references))
    for start in range(0, len(references), b):
        x, y = references[start : start + b], outputs[start : start + b]
        n = len(x)
        pad = ((0, b - n),) + ((0, 0),) * (x.ndim - 1)
        batch = score_fn(np.pad(x, pad).astype(np.float32), np.pad(y, pad).astype(np.float32))
        for key, value in batch.items():
            sums[key] = sums.get(key, 0.0) + float(np.sum(np.asarray(value, np.float64)[:n]))
    return {k: v / len(references) for k, v in sums.items()}


def low_res_psnr(outputs: np.ndarray, low: np.ndarray, f: int) -> float:
    """Mean PSNR (dB) of the outputs [N, H, W, C] bicubic-down-sampled by f against the low-res
    inputs [N, H/f, W/f, C]."""
    down = degradations.bicubic(jnp.asarray(outputs, jnp.float32), f)  # [N, h, w, C]
    return float(np.mean(np.asarray(psnr(jnp.asarray(low, jnp.float32), down), np.float64)))


def is_grey_fashion_mnist(config: Any) -> bool:
    """32x32 grey Fashion-MNIST: the classifier's inputs."""
    d = config.data
    return d.name == "fashion_mnist" and d.image_size == 32 and d.get("channels", 1) == 1


def check_superres(config: Any) -> None:
    """ConfigError unless the workdir holds a concat super-resolution model."""
    kind = builders.condition_kind(config)
    if kind != "superres":
        raise ConfigError(
            f"--what superres scores super-resolution models (conditioning_key 'concat' with the "
            f"'identity' cond stage, e.g. configs/tasks/fashion_mnist/superres_x4.py); this "
            f"workdir's model is conditioned on {kind!r}."
        )
    if config.data.name == "imported":
        raise ConfigError(
            "This workdir holds imported weights (config.data.name='imported') and names no "
            "dataset to take test images from; evaluate a workdir trained here."
        )


def evaluate_workdir(
    workdir: str,
    *,
    num: int | None,
    seed: int,
    sampler: str | None,
    steps: int | None,
    eta: float | None,
    batch_size: int,
    classifier_dir: str | None = None,
) -> dict[str, Any]:
    """PSNR, SSIM and LPIPS-VGG of a super-resolution workdir's samples beside bicubic,
    nearest-neighbour and first-stage-reconstruction references (module docstring).

    Args:
      workdir: a training workdir of a concat super-resolution model.
      num: the first `num` test images (None: 1000).
      seed: the seed of the sampling noise (and of bsr_light degradations).
      sampler, steps, eta: the sampler's (None: the workdir config's `sample` section).
      batch_size: images per compiled batch (sampling and scoring).
      classifier_dir: cache of the Fashion-MNIST classifier (default: its own; used for 32x32
        grey Fashion-MNIST only).

    Returns:
      JSON-able {"ldm", "bicubic", "nearest", "reconstruction": {metric: mean}, "ground_truth"
      (class accuracy, Fashion-MNIST only), "num_images", "protocol", "ldm_step", "seconds"}.

    Raises:
      ConfigError: the workdir does not hold a super-resolution model.
    """
    start = time.time()
    trained = load_trained_ldm(workdir)
    config = trained.config
    check_superres(config)
    d, s = config.data, config.sample
    f = builders.downsampling_factor(config)
    method = degradation(config)
    num = DEFAULT_NUM if num is None else num
    if num <= 0:
        raise ConfigError(f"--num must be positive, got {num}.")
    source = builders.build_data_source(config, "test")
    test = pipeline.load_split_dict(source, d.image_size, d.channels, max_examples=num)
    images = np.asarray(test["image"], np.float32)  # [N, H, W, C]
    degrade = jax.jit(functools.partial(degradations.degrade, f=f, kind=method))
    low = np.asarray(degrade(images, rng=jax.random.PRNGKey(seed)), np.float32)  # [N, h, w, C]

    sampler, steps = sampler or s.sampler, steps or s.steps
    eta = float(s.eta if eta is None else eta)
    samples = sample_per_condition(
        trained, low, None, sampler=sampler, steps=steps, guidance=1.0, eta=eta, seed=seed,
        batch_size=batch_size,
    )  # fmt: skip
    outputs = {
        "ldm": samples,
        "bicubic": upsample_bicubic(low, f),
        "nearest": upsample_nearest(low, f),
        "reconstruction": reconstruct_images(trained, images, batch_size),
    }
    score_fn = make_score_fn(lpips.load_lpips_params(LPIPS_NET))
    result: dict[str, Any] = {
        name: mean_scores(score_fn, images, out, batch_size) for name, out in outputs.items()
    }
    if method == "bicubic":
        for name, out in outputs.items():
            result[name]["low_res_psnr_db"] = low_res_psnr(out, low, f)
    if is_grey_fashion_mnist(config):
        params, meta = clf.get_or_train_classifier(classifier_dir)
        classify = metrics.make_classify_fn(clf.FashionClassifier(), params, batch_size)
        labels = np.asarray(test["label"])
        for name, out in (*outputs.items(), ("ground_truth", images)):
            correct = np.argmax(classify(out)[0], -1) == labels
            result.setdefault(name, {})["class_accuracy"] = float(np.mean(correct))
        result["classifier_test_accuracy"] = meta["test_accuracy"]
    result.update(
        num_images=int(len(images)),
        protocol={
            "split": "test",
            "num": int(len(images)),
            "seed": seed,
            "sampler": sampler,
            "steps": int(steps),
            "eta": eta,
            "guidance": None,  # concat conditions: unguided
            "degradation": method,
            "factor": f,
            "low_res_shape": list(low.shape[1:]),
            "image_shape": list(images.shape[1:]),
            "bicubic": "jax.image.resize 'bicubic' (Keys a=-0.5), clipped to [-1, 1]",
            "nearest": f"each pixel repeated {f}x{f}",
            "reconstruction": "D(E(x)) of the ground truth, posterior mean",
            "lpips": "LPIPS v0.1 VGG16, grey repeated to 3 channels",
        },
        ldm_step=trained.step,
        seconds=round(time.time() - start, 1),
    )
    return result
