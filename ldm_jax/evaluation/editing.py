"""How far img2img `strength` moves an image, and whether the new class wins.

Protocol (`evaluate_workdir`, on a class-conditional Fashion-MNIST workdir): the first `num`
held-out test images x with labels y each get a target class t != y (`target_classes`:
t = (y + 1 + r) % 10 with r uniform in 0..8 from numpy's `default_rng(seed)`, so t is uniform
over the nine other classes). For every strength S the image is edited to its target class by
the `--task edit` img2img (`sampling/editing.py`): its latent (the first stage's encoding times
the scale factor) is noised to the first timestep of the last int(steps * S) grid steps and
denoised under class t with the config's guidance (`generate.make_sampler(strength=S)` with
`x_init`; S = 1 ignores the image). Every strength shares the noise (batch b of `batch_size`
images draws it from fold_in(PRNGKey(seed), b)), so the curve differs by strength alone.

Per strength, over the edits e against their inputs x:
  lpips_vgg         mean LPIPS-VGG(e, x) (`losses.lpips`, grey repeated to RGB);
  rmse              mean over images of sqrt(mean over pixels of (e - x)^2), pixels in [-1, 1];
  target_accuracy   the fraction the project's Fashion-MNIST classifier assigns to t;
  source_fraction   the fraction it still assigns to y.
Beside the curve, its endpoints, scored the same way:
  inputs            S -> 0 in the ideal: x itself (distances 0; target_accuracy near 0, the
                    classifier's errors that happen to land on t; source_fraction its accuracy);
  reconstruction    S -> 0 through this first stage: D(E(x)), the image a tiny strength returns;
  samples           plain class-conditional sampling of the targets (S = 1: with the shared noise
                    the strength-1 edit is exactly this sample, so it is taken from that row when
                    1.0 is among the strengths).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.config import builders
from ldm_jax.config.validation import ConfigError
from ldm_jax.data import pipeline
from ldm_jax.diffusion.timesteps import img2img_start_index
from ldm_jax.evaluation import caption_retrieval as cr
from ldm_jax.evaluation import classifier as clf
from ldm_jax.evaluation import metrics
from ldm_jax.evaluation.conditioned_samples import sample_per_condition
from ldm_jax.sampling import editing
from ldm_jax.sampling.generate import decode_latents, encode_images, null_label
from ldm_jax.sampling.request import SampleInputError
from ldm_jax.workdir.reader import TrainedLDM, load_trained_ldm

DEFAULT_NUM = 200
DEFAULT_STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)
TARGET_RULE = "(label + 1 + r) % num_classes, r = default_rng(seed).integers(0, num_classes - 1)"
EDITABLE_CONDITIONS = ("class", "adm")


def target_classes(labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """A target class for each label, never the label itself (`TARGET_RULE`).

    Args:
      labels: int [N] in [0, num_classes).
      num_classes: at least 2.
      seed: seeds the offsets; the same seed gives the same targets.

    Returns:
      int32 [N], uniform over the num_classes - 1 other classes.
    """
    labels = np.asarray(labels, np.int64)
    offsets = np.random.default_rng(seed).integers(0, num_classes - 1, size=labels.shape)
    return ((labels + 1 + offsets) % num_classes).astype(np.int32)


def pixel_rmse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root mean squared pixel difference of each pair: [N, H, W, C] x2 -> float64 [N]."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return np.sqrt(np.mean(diff.reshape(len(diff), -1) ** 2, axis=1))


def edit_scores(
    lpips_vgg: np.ndarray,
    rmse: np.ndarray,
    predicted: np.ndarray,
    sources: np.ndarray,
    targets: np.ndarray,
) -> dict[str, float]:
    """The means of one row of the curve.

    Args:
      lpips_vgg: float [N] LPIPS of each edit against its input.
      rmse: float [N] pixel RMSE of each edit against its input.
      predicted: int [N] the classifier's class of each edit.
      sources, targets: int [N] each image's own and requested class.

    Returns:
      {"lpips_vgg", "rmse", "target_accuracy", "source_fraction"} as floats.
    """
    predicted = np.asarray(predicted)
    return {
        "lpips_vgg": float(np.mean(np.asarray(lpips_vgg, np.float64))),
        "rmse": float(np.mean(np.asarray(rmse, np.float64))),
        "target_accuracy": float(np.mean(predicted == np.asarray(targets))),
        "source_fraction": float(np.mean(predicted == np.asarray(sources))),
    }


def check_editable(config: Any) -> int:
    """The number of classes of a class-conditional Fashion-MNIST model; ConfigError otherwise
    (the project's classifier judges only 32x32 grey Fashion-MNIST classes)."""
    kind = builders.condition_kind(config)
    d = config.data
    if d.name != "fashion_mnist" or kind not in EDITABLE_CONDITIONS:
        raise ConfigError(
            "evaluate --what edit edits class-conditional Fashion-MNIST images to another class "
            f"and judges them with the project's classifier; this workdir's model is conditioned "
            f"on {kind!r} and trained on {d.name!r}. Train configs/quickstart.py, or score this "
            "workdir with --what reconstruction."
        )
    shape = (d.image_size, d.image_size, d.channels)
    if shape != clf.IMAGE_SHAPE:
        raise ConfigError(
            f"evaluate --what edit needs {clf.IMAGE_SHAPE} images (the classifier's input); this "
            f"workdir's data are {shape}: set data.image_size=32 and data.channels=1."
        )
    return int(d.num_classes)


def check_strengths(strengths: Sequence[float], steps: int) -> tuple[float, ...]:
    """The strengths as floats; ConfigError for none, one outside (0, 1], or one that runs no
    denoising step with `steps` (img2img runs int(steps * S) of them)."""
    if not strengths:
        raise ConfigError("--strengths is empty; give e.g. --strengths=0.2,0.4,0.6,0.8,1.0.")
    out = tuple(float(s) for s in strengths)
    for s in out:
        if not 0.0 < s <= 1.0:
            raise ConfigError(f"--strengths: every strength must be in (0, 1], got {s}.")
        try:
            editing.check_strength(s, steps)
        except SampleInputError:
            raise ConfigError(
                f"--strengths: {s} with --steps {steps} runs no denoising step (img2img runs "
                f"int(steps * strength) of them); use strengths of at least {1 / steps:.3g} or "
                "more --steps."
            ) from None
    if len(set(out)) != len(out):
        raise ConfigError(f"--strengths lists a strength twice: {list(out)}.")
    return out


def _chunks(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, count) of each batch of `batch_size` over n rows."""
    return [(s, min(batch_size, n - s)) for s in range(0, n, batch_size)]


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    """Pads the leading axis to `size` by repeating its last row (one compiled batch shape)."""
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


def encode_latents(trained: TrainedLDM, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The img2img start latents of images [N, H, W, C] in [-1, 1]: the first stage's encoding
    times the scale factor (as `editing.read_guide`), float32 [N, h, w, c]."""
    ae = builders.build_autoencoder(trained.config)
    encode = jax.jit(lambda p, x, s: encode_images(ae, p, x) * s)
    b = min(batch_size, len(images))
    scale = np.float32(trained.scale_factor)
    out = [
        np.asarray(encode(trained.ae_params, _pad(images[s : s + n], b), scale))[:n]
        for s, n in _chunks(len(images), b)
    ]
    return np.concatenate(out).astype(np.float32)


def decode_scaled_latents(
    trained: TrainedLDM, latents: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """Images float32 [N, H, W, C] in [-1, 1] of scaled latents [N, h, w, c]: on the output of
    `encode_latents`, the reconstruction D(E(x)) that img2img returns as strength -> 0."""
    ae = builders.build_autoencoder(trained.config)
    decode = jax.jit(lambda p, z, s: jnp.clip(decode_latents(ae, p, z / s), -1.0, 1.0))
    b = min(batch_size, len(latents))
    scale = np.float32(trained.scale_factor)
    out = [
        np.asarray(decode(trained.ae_params, _pad(latents[s : s + n], b), scale))[:n]
        for s, n in _chunks(len(latents), b)
    ]
    return np.concatenate(out).astype(np.float32)


def edit_images(
    trained: TrainedLDM,
    latents: np.ndarray,
    targets: np.ndarray,
    strength: float,
    *,
    sampler: str,
    steps: int,
    guidance: float,
    eta: float,
    seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:
    """img2img of each latent to its target class, as `--task edit --class t --strength S`.

    Args:
      trained: a class-conditional model.
      latents: float32 [N, h, w, c] scaled start latents (`encode_latents`).
      targets: int [N] the class each image is edited to.
      strength: in (0, 1]; 1 ignores the latents (plain class-conditional sampling).
      sampler, steps, guidance, eta: the sampler's settings (guidance against the null class,
        when the model has one).
      seed: batch b draws its noise from fold_in(PRNGKey(seed), b), whatever the strength.
      batch_size: images per compiled batch (the last is padded by repeating its last row).

    Returns:
      float32 [N, H, W, C] in [-1, 1].
    """
    null = null_label(builders.build_denoiser(trained.config))
    uncond = None if null is None else np.full((1,), null, np.int32)  # [1]
    # editing.ImageGuide.sampler_inputs: x_init only below strength 1.
    x_init = {} if strength >= 1.0 else {"x_init": latents}
    return sample_per_condition(
        trained, np.asarray(targets, np.int32), uncond, sampler=sampler, steps=steps,
        guidance=guidance, eta=eta, seed=seed, batch_size=batch_size, strength=strength,
        latents=x_init,
    )  # fmt: skip


def _score(
    images: np.ndarray,
    inputs: np.ndarray,
    sources: np.ndarray,
    targets: np.ndarray,
    lpips_fn: cr.PairDistance,
    classify: metrics.ClassifyFn,
) -> dict[str, float]:
    """`edit_scores` of images [N, H, W, C] against their inputs."""
    predicted = classify(images)[0].argmax(-1)
    return edit_scores(
        lpips_fn(images, inputs), pixel_rmse(images, inputs), predicted, sources, targets
    )


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
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    classifier_dir: str | None = None,
) -> dict[str, Any]:
    """The editing curve of a class-conditional Fashion-MNIST workdir (module docstring).

    Args:
      workdir: a trained LDM workdir.
      num: the first `num` test images (default `DEFAULT_NUM`).
      seed: seeds the target classes and the noise.
      guidance, sampler, steps, eta: default to the config's `sample` section.
      batch_size: images per compiled batch.
      strengths: img2img strengths in (0, 1]; one compiled sampler each.
      classifier_dir: the classifier cache (default `classifier.default_cache_dir()`).

    Returns:
      JSON-able {"strengths": [{"strength", "denoising_steps", "lpips_vgg", "rmse",
      "target_accuracy", "source_fraction"}, ...], "inputs", "reconstruction", "samples",
      "num_images", "classifier_test_accuracy", "protocol", "ldm_step", "seconds"}.

    Raises:
      ConfigError: the model is not class-conditional Fashion-MNIST, or a bad num or strength.
    """
    start = time.time()
    trained = load_trained_ldm(workdir)
    config = trained.config
    num_classes = check_editable(config)
    s = config.sample
    sampler, steps = sampler or s.sampler, steps or s.steps
    eta = s.eta if eta is None else eta
    guidance = s.guidance_scale if guidance is None else guidance
    strengths = check_strengths(strengths, steps)
    num = DEFAULT_NUM if num is None else num
    if num <= 0 or batch_size <= 0:
        raise ConfigError(f"--num and --batch_size must be positive, got {num}, {batch_size}.")

    source = builders.build_data_source(config, "test")
    images, labels = pipeline.load_split_arrays(
        source, config.data.image_size, max_examples=num
    )  # [N, 32, 32, 1], [N]
    labels = np.asarray(labels, np.int32)
    targets = target_classes(labels, num_classes, seed)
    params, meta = clf.get_or_train_classifier(classifier_dir)
    classify = metrics.make_classify_fn(clf.FashionClassifier(), params)
    lpips_fn = cr.lpips_pair_distance("vgg16", batch_size)
    score = lambda x: _score(x, images, labels, targets, lpips_fn, classify)

    latents = encode_latents(trained, images, batch_size)
    settings = dict(
        sampler=sampler, steps=steps, guidance=guidance, eta=eta, seed=seed, batch_size=batch_size
    )
    curve, samples = [], None
    for strength in strengths:
        edits = edit_images(trained, latents, targets, strength, **settings)
        row = score(edits)
        run = steps - img2img_start_index(steps, strength)
        curve.append({"strength": strength, "denoising_steps": run, **row})
        if strength == 1.0:
            samples = row
    if samples is None:
        samples = score(edit_images(trained, latents, targets, 1.0, **settings))
    predicted = classify(images)[0].argmax(-1)
    inputs = edit_scores(np.zeros(len(images)), np.zeros(len(images)), predicted, labels, targets)
    guided = null_label(builders.build_denoiser(config)) is not None
    return {
        "strengths": curve,
        "inputs": inputs,
        "reconstruction": score(decode_scaled_latents(trained, latents, batch_size)),
        "samples": samples,
        "num_images": int(len(images)),
        "classifier_test_accuracy": meta["test_accuracy"],
        "protocol": {
            "split": "test",
            "images": f"the first {len(images)} test images",
            "target_rule": TARGET_RULE,
            "seed": seed,
            "noise": "batch b: fold_in(PRNGKey(seed), b), shared by every strength",
            "batch_size": int(batch_size),
            "sampler": sampler,
            "steps": int(steps),
            "eta": float(eta),
            "guidance": float(guidance) if guided else None,
            "strengths": list(strengths),
            "distances": "lpips_vgg (VGG16, grey repeated to RGB), rmse (pixels in [-1, 1])",
        },
        "ldm_step": trained.step,
        "seconds": round(time.time() - start, 1),
    }
