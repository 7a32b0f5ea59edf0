"""Scores a trained workdir with the project's Fashion-MNIST classifier; prints one JSON line.

  python -m ldm_jax.evaluate --workdir runs/quickstart [--per_class 16 --guidance 2.0]

Reports: the classifier's own test accuracy; the autoencoder's reconstruction PSNR on the test
split; for `--per_class` samples of every class: the fraction classified as the requested
class, the diversity ratio (mean pairwise pixel distance within a class over the same for as
many real test images of that class) and the Frechet distance in the classifier's hidden
features against real test images, divided by the distance between two disjoint real sets of the
same size. The classifier is trained on first use (about a minute) and cached.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from ldm_jax.cli_errors import user_errors_as_exit
from ldm_jax.data import datasets, pipeline
from ldm_jax.evaluation import classifier as clf
from ldm_jax.evaluation import metrics
from ldm_jax.losses.autoencoder_loss import psnr
from ldm_jax.training import builders
from ldm_jax.training.config_validation import SAMPLERS
from ldm_jax.training.generation import make_generate_fn
from ldm_jax.training.workdir import TrainedLDM, load_trained_ldm

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir to evaluate.")
_PER_CLASS = flags.DEFINE_integer("per_class", 16, "Samples per class.")
_GUIDANCE = flags.DEFINE_float("guidance", None, "Guidance scale (default: the config's).")
_SAMPLER = flags.DEFINE_enum("sampler", None, list(SAMPLERS), "Sampler (default: the config's).")
_STEPS = flags.DEFINE_integer("steps", None, "Sampler steps (default: the config's).")
_ETA = flags.DEFINE_float("eta", None, "DDIM eta (default: the config's sample.eta).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for sampling and for choosing real images.")
_CLASSIFIER_DIR = flags.DEFINE_string(
    "classifier_dir", None, "Classifier cache (default ~/.cache/ldm_jax/...)."
)
flags.mark_flags_as_required(["workdir"])


def reconstruction_psnr(trained: TrainedLDM, images: np.ndarray, batch_size: int = 500) -> float:
    """Mean PSNR (dB) of decode(mean of encode(x)) over `images` [N, H, W, C]."""
    ae = builders.build_autoencoder(trained.config)
    recon = jax.jit(lambda x: psnr(x, ae.apply({"params": trained.ae_params}, x)[0]))
    values = [
        np.asarray(recon(images[i : i + batch_size])) for i in range(0, len(images), batch_size)
    ]
    return float(np.mean(np.concatenate(values)))


def evaluate(
    trained: TrainedLDM,
    per_class: int,
    guidance: float,
    sampler: str,
    steps: int,
    seed: int,
    classifier_dir: str | None,
    eta: float = 0.0,
) -> dict:
    """Computes every figure of the module docstring; returns a JSON-serialisable dict."""
    config = trained.config
    source = datasets.get_data_source(config.data.name, "test", config.data.data_dir or None)
    test_images, test_labels = pipeline.load_split_arrays(source, config.data.image_size)
    params, meta = clf.get_or_train_classifier(classifier_dir)
    classify = metrics.make_classify_fn(clf.FashionClassifier(), params)

    start = time.perf_counter()
    labels = np.repeat(np.arange(config.data.num_classes, dtype=np.int32), per_class)
    generate = make_generate_fn(config, sampler, steps)
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
        "per_class": per_class,
        "sampling_seconds": round(sample_seconds, 1),
        "classifier_test_accuracy": meta["test_accuracy"],
        "autoencoder_test_psnr_db": reconstruction_psnr(trained, test_images),
        **scores,
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    with user_errors_as_exit("python -m ldm_jax.evaluate"):
        logging.set_verbosity(logging.WARNING)
        trained = load_trained_ldm(_WORKDIR.value)
        cfg = trained.config.sample
        guidance = cfg.guidance_scale if _GUIDANCE.value is None else _GUIDANCE.value
        result = evaluate(
            trained,
            _PER_CLASS.value,
            guidance,
            _SAMPLER.value or cfg.sampler,
            _STEPS.value or cfg.steps,
            _SEED.value,
            _CLASSIFIER_DIR.value,
            cfg.eta if _ETA.value is None else _ETA.value,
        )
        with open(os.path.join(_WORKDIR.value, "eval.json"), "w") as f:
            json.dump(result, f, indent=2)
        print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
