"""Scores a trained workdir: samples per class judged by the project's Fashion-MNIST classifier.

Figures: the classifier's own test accuracy; the autoencoder's reconstruction PSNR on the test
split; for `per_class` samples of every class: the fraction classified as the requested class,
the diversity ratio (mean pairwise pixel distance within a class over the same for as many real
test images of that class) and the Frechet distance in the classifier's hidden features against
real test images, divided by the distance between two disjoint real sets of the same size. The
classifier is trained on first use (about a minute) and cached.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.config import builders
from ldm_jax.config.validation import ConfigError
from ldm_jax.data import datasets, pipeline
from ldm_jax.evaluation import classifier as clf
from ldm_jax.evaluation import metrics
from ldm_jax.losses.autoencoder_loss import psnr
from ldm_jax.sampling.generate import make_generate_fn, timestep_grid
from ldm_jax.workdir.reader import TrainedLDM


def reconstruction_psnr(trained: TrainedLDM, images: np.ndarray, batch_size: int = 500) -> float:
    """Mean PSNR (dB) of decode(mean of encode(x)) over `images` [N, H, W, C]."""
    ae = builders.build_autoencoder(trained.config)
    recon = jax.jit(lambda x: psnr(x, ae.apply({"params": trained.ae_params}, x)[0]))
    values = [
        np.asarray(recon(images[i : i + batch_size])) for i in range(0, len(images), batch_size)
    ]
    return float(np.mean(np.concatenate(values)))


SCORABLE_CONDITIONS = ("class", "adm")


def check_scorable(config) -> None:
    """Raises ConfigError unless `config` is a class-conditional Fashion-MNIST model (the only
    kind the project's classifier can judge)."""
    kind = builders.condition_kind(config)
    if config.data.name != "fashion_mnist" or kind not in SCORABLE_CONDITIONS:
        text = ", its samples with --what text2img" if kind in ("text", "context") else ""
        raise ConfigError(
            "evaluate --what samples judges class-conditional Fashion-MNIST samples with the "
            f"project's classifier; this workdir's model is conditioned on {kind!r} and trained "
            f"on {config.data.name!r}. Score its first stage with --what reconstruction{text}."
        )


def evaluate(
    trained: TrainedLDM,
    per_class: int,
    guidance: float,
    sampler: str,
    steps: int,
    seed: int,
    classifier_dir: str | None,
    eta: float = 0.0,
    timestep_spacing: str | None = None,
) -> dict:
    """Computes every figure of the module docstring; returns a JSON-serialisable dict.

    `timestep_spacing`: the sampler's grid (None: the workdir config's, else "leading").
    """
    config = trained.config
    check_scorable(config)
    source = datasets.get_data_source(config.data.name, "test", config.data.data_dir or None)
    test_images, test_labels = pipeline.load_split_arrays(source, config.data.image_size)
    params, meta = clf.get_or_train_classifier(classifier_dir)
    classify = metrics.make_classify_fn(clf.FashionClassifier(), params)

    start = time.perf_counter()
    labels = np.repeat(np.arange(config.data.num_classes, dtype=np.int32), per_class)
    spacing, offset = timestep_grid(config, timestep_spacing)
    generate = make_generate_fn(config, sampler, steps, spacing, offset)
    samples = np.asarray(
        generate(
            trained.ae_params,
            trained.ldm_params,
            labels,
            jax.random.PRNGKey(seed),
            jnp.float32(guidance),
            jnp.float32(eta),
            jnp.float32(trained.scale_factor),
        )
    )
    sample_seconds = time.perf_counter() - start
    scores = metrics.evaluate_class_samples(
        classify,
        samples,
        labels,
        test_images,
        test_labels,
        seed=seed,
        num_classes=config.data.num_classes,
    )
    return {
        "ldm_step": trained.step,
        "guidance": guidance,
        "sampler": sampler,
        "steps": steps,
        "eta": eta,
        "timestep_spacing": spacing,
        "steps_offset": offset,
        "per_class": per_class,
        "sampling_seconds": round(sample_seconds, 1),
        "classifier_test_accuracy": meta["test_accuracy"],
        "autoencoder_test_psnr_db": reconstruction_psnr(trained, test_images),
        **scores,
    }
