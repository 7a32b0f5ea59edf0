"""Scores every kept checkpoint of one f-study run; `python score.py --workdir W` prints JSON.

Fashion-MNIST (class-conditional): `PER_CLASS` guided samples of each class, scored by
`ldm_jax.evaluation.metrics.evaluate_class_samples` (the project classifier's accuracy on them,
the Frechet distance in its hidden features against class-matched real test images, and that
distance's ratio to two disjoint real sets of the same size and class make-up: ratio 1 = as
close as real data). Emoji (unconditional): `EMOJI_SAMPLES` unguided samples against the
held-out emoji in pooled LPIPS-VGG features, beside as many random training emoji against the
same held-out set (the real-vs-real floor at this sample size). Every checkpoint is sampled with
the same seed and the same DDIM settings (10 steps, eta 0; the config's guidance, 2 or 1).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.config import builders
from ldm_jax.data import pipeline
from ldm_jax.evaluation import classifier as clf
from ldm_jax.evaluation import metrics, reconstruction
from ldm_jax.sampling.generate import make_generate_fn
from ldm_jax.workdir import layout
from ldm_jax.workdir.reader import load_config, load_first_stage_params, load_trained_ldm

PER_CLASS = 10  # Fashion-MNIST samples per class and checkpoint
EMOJI_SAMPLES = 144  # as many as there are held-out emoji
QUICK_SAMPLES = 8
SEED = 0
SAMPLE_STEPS = 10  # deterministic DDIM (eta 0): the CPU time allowed 25 eta-1 steps for none
ETA = 0.0
GRID_SAMPLES = 20  # kept from the last checkpoint for the report's grid


def _split_images(config: Any, split: str, num: int | None) -> np.ndarray:
    source = builders.build_data_source(config, split)
    d = config.data
    return pipeline.load_split_dict(source, d.image_size, d.get("channels"), max_examples=num)[
        "image"
    ]  # [N, H, W, C] in [-1, 1]


def _labelled_test(config: Any) -> tuple[np.ndarray, np.ndarray]:
    source = builders.build_data_source(config, "test")
    return pipeline.load_split_arrays(source, config.data.image_size)


def make_scorer(config: Any, quick: bool):
    """(labels [N], scores(samples) -> dict) for the run's dataset."""
    if config.data.name == "fashion_mnist":
        per_class = 1 if quick else PER_CLASS
        labels = np.repeat(np.arange(config.data.num_classes, dtype=np.int32), per_class)
        test_images, test_labels = _labelled_test(config)
        params, _ = clf.get_or_train_classifier(None)
        classify = metrics.make_classify_fn(clf.FashionClassifier(), params)

        def score(samples: np.ndarray) -> dict:
            out = metrics.evaluate_class_samples(
                classify, samples, labels, test_images, test_labels, seed=SEED
            )
            keep = ("accuracy", "fd", "fd_real_baseline", "fd_ratio", "mean_diversity_ratio")
            return {k: out[k] for k in keep} | {"features": "classifier"}

        return labels, score
    num = QUICK_SAMPLES if quick else EMOJI_SAMPLES
    n_classes = max(int(config.data.num_classes or 0), 1)
    labels = np.arange(num, dtype=np.int32) % n_classes  # ignored by unconditional models
    held_out = _split_images(config, "test", num)
    train = _split_images(config, "train", None)
    pick = np.random.default_rng(SEED).choice(len(train), size=len(held_out), replace=False)
    features = reconstruction.lpips_feature_fn("vgg16")
    held_feats = features(held_out)
    floor = metrics.frechet_distance(features(train[pick]), held_feats)

    def score(samples: np.ndarray) -> dict:
        fd = metrics.frechet_distance(features(samples), held_feats)
        return {
            "fd": fd,
            "fd_real_baseline": floor,
            "fd_ratio": fd / floor,
            "features": "lpips_vgg_pooled",
            "held_out": len(held_out),
        }

    return labels, score


def score_workdir(workdir: str, quick: bool = False, stride: int = 1) -> dict[str, dict]:
    """{step: scores} for every `stride`-th kept LDM checkpoint of `workdir`, counted back from
    the last (sampling seconds included)."""
    config = load_config(workdir)
    ae_params = load_first_stage_params(workdir, config)
    directory = layout.checkpoint_dir(workdir, "ldm")
    steps = sorted(int(p) for p in os.listdir(directory) if p.isdigit())[::-1][::stride][::-1]
    labels, score = make_scorer(config, quick)
    s = config.sample
    steps_n, eta = (2, ETA) if quick else (SAMPLE_STEPS, ETA)
    generate = make_generate_fn(config, s.sampler, steps_n)
    out = {}
    for step in steps:
        trained = load_trained_ldm(workdir, step)
        ema, scale = trained.ldm_params, trained.scale_factor
        start = time.perf_counter()
        samples = np.asarray(
            generate(
                ae_params,
                ema,
                jnp.asarray(labels),
                jax.random.PRNGKey(SEED),
                jnp.float32(s.guidance_scale),
                jnp.float32(eta),
                jnp.float32(scale),
            )
        )  # [N, H, W, C]
        seconds = time.perf_counter() - start
        out[str(step)] = {
            **score(samples),
            "num_samples": len(samples),
            "sampler": s.sampler,
            "sample_steps": steps_n,
            "eta": eta,
            "guidance": float(s.guidance_scale),
            "sampling_s": round(seconds, 1),
        }
        print(json.dumps({"step": step, **out[str(step)]}), flush=True)
    pick = np.linspace(0, len(samples) - 1, min(GRID_SAMPLES, len(samples))).astype(int)
    np.save(pathlib.Path(workdir) / "f_study_samples.npy", np.clip(samples[pick], -1, 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--stride", type=int, default=1, help="score every n-th checkpoint")
    args = parser.parse_args()
    scores = score_workdir(args.workdir, args.quick, args.stride)
    path = pathlib.Path(args.workdir) / "f_study_scores.json"
    path.write_text(json.dumps(scores, indent=2) + "\n")
    print(json.dumps({"scores": str(path)}))


if __name__ == "__main__":
    main()
