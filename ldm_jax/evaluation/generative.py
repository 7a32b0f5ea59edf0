"""Sample-quality metrics of a class-conditional or unconditional model at any sample count.

`evaluate_generative` samples `num_samples` images into shards (`sample_shards`: resumable,
sharded over devices and processes), then scores them against the first `num_reference` real
images of a data split. Metrics (`METRICS`):

  fd_classifier     Frechet distance in the hidden features [128] of the project's
                    Fashion-MNIST classifier (32x32 grey Fashion-MNIST models only);
  fd_lpips          Frechet distance in pooled LPIPS-VGG16 features [1472];
  precision_recall  improved precision and recall (Kynkaanniemi et al. 2019, k = 3) in pooled
                    LPIPS-VGG16 features (the paper used VGG16 features too);
  accuracy          fraction of samples the Fashion-MNIST classifier assigns to the requested
                    class (class-conditional Fashion-MNIST only);
  fid, sfid, is     FID (pool3 [2048]), sFID (spatial [2023]) and Inception Score (logits
                    [1008], 10 splits) with the FID Inception-v3, whose weights the user
                    provides (`--inception_weights PATH` or LDM_JAX_INCEPTION_WEIGHTS).

Samples and real images take the same path: uint8 quantisation (`sample_shards.QUANTISATION`),
then each feature extractor's own preprocessing (grey images are repeated to three channels for
LPIPS and Inception; Inception's input is resized to 299 by `--resize`, one of
`fid_protocol.MODES`: clean-fid's PIL bicubic on float32 (the default), pytorch-fid's or TF1's
bilinear). Every metric's entry in
the result states that protocol (`metric_protocol`): sample count and seed, sampler settings,
reference set, features, resize, channels. `protocol_difference` lists what differs between
two entries, so results are comparable or visibly not. Reference features are computed once
and cached in `<workdir>/eval_reference/`, keyed by everything that defines them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ldm_jax.config import builders
from ldm_jax.config.validation import ConfigError
from ldm_jax.data import pipeline
from ldm_jax.evaluation import metrics as base_metrics
from ldm_jax.evaluation import precision_recall as pr
from ldm_jax.evaluation import reconstruction, report, sample_shards
from ldm_jax.evaluation.feature_extractors import (
    Extractor,
    classifier_extractor,
    inception_extractor,
    lpips_extractor,
)
from ldm_jax.sampling.images import to_uint8
from ldm_jax.training import logging as log
from ldm_jax.workdir.reader import load_trained_ldm

METRICS = ("fd_classifier", "fd_lpips", "precision_recall", "accuracy", "fid", "sfid", "is")
INCEPTION_METRICS = ("fid", "sfid", "is")
# metric -> (extractor family, feature key it reads, whether it needs real images)
_FEATURES = {
    "fd_classifier": ("classifier", "classifier_hidden", True),
    "fd_lpips": ("lpips_vgg", "lpips_vgg16_pooled", True),
    "precision_recall": ("lpips_vgg", "lpips_vgg16_pooled", True),
    "accuracy": ("classifier", "classifier_logits", False),
    "fid": ("inception", "inception_pool3", True),
    "sfid": ("inception", "inception_spatial", True),
    "is": ("inception", "inception_logits", False),
}
INCEPTION_ENV = "LDM_JAX_INCEPTION_WEIGHTS"  # as `inception_weights.ENV_VAR`
REFERENCE_DIR = "eval_reference"
IS_SPLITS = 10


def applicable_metrics(config) -> tuple[str, ...]:
    """The offline metrics that apply to a workdir's model (the default of `--metrics`)."""
    out = ["fd_lpips", "precision_recall"]
    if reconstruction.choose_features(config, "auto") == "classifier":
        out.insert(0, "fd_classifier")
    try:
        report.check_scorable(config)
        out.append("accuracy")
    except ConfigError:
        pass
    return tuple(out)


def check_metrics(names: Sequence[str], config) -> tuple[str, ...]:
    """`names` in order without repeats; ConfigError for unknown or inapplicable ones."""
    names = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ConfigError(f"--metrics: unknown {unknown or 'empty'}; choose from {METRICS}.")
    offline = applicable_metrics(config)
    bad = [n for n in names if n in ("fd_classifier", "accuracy") and n not in offline]
    if bad:
        raise ConfigError(
            f"--metrics {','.join(bad)} judge 32x32 Fashion-MNIST samples (accuracy: "
            f"class-conditional ones) with the project's classifier; this workdir's model "
            f"({config.data.name!r}) gets {','.join(offline)} (and fid,sfid,is with weights)."
        )
    return names


def default_samples_dir(workdir: str, protocol: sample_shards.SampleProtocol) -> str:
    """`<workdir>/eval_samples/<readable protocol name>`."""
    p = protocol
    name = (
        f"step{p.ldm_step}_{p.sampler}{p.steps}_eta{p.eta:g}_g{p.guidance:g}_seed{p.seed}_"
        f"n{p.num_samples}_shard{p.shard_size}"
    )
    return os.path.join(workdir, "eval_samples", name)


REFERENCE_CHUNK = 1000  # real images preprocessed at a time


def reference_set(
    config, split: str, num: int
) -> tuple[dict[str, Any], Callable[[], Iterator[np.ndarray]]]:
    """The record of the first `num` images of a split (fewer if the split is smaller), and a
    function yielding them as uint8 [<= REFERENCE_CHUNK, H, W, C] chunks (called only when their
    features are not cached)."""
    d = config.data
    if d.name == "imported":
        raise ConfigError(
            "This workdir holds imported weights and names no dataset to compare with; set "
            "data.name in its config.json to a dataset, or score samples with your own code."
        )
    source = builders.build_data_source(config, split)
    record = {
        "dataset": d.name,
        "split": split,
        "num": int(min(num, len(source))),
        "selection": "first",
        "seed": None,
        "image_size": int(d.image_size),
    }

    def load() -> Iterator[np.ndarray]:
        read = getattr(source, "__getitems__", None) or (lambda rows: [source[i] for i in rows])
        for start in range(0, record["num"], REFERENCE_CHUNK):
            rows = list(range(start, min(record["num"], start + REFERENCE_CHUNK)))
            batch = pipeline.preprocess_batch(read(rows), d.image_size, channels=d.get("channels"))
            yield to_uint8(batch["image"])  # [c, H, W, C]

    return record, load


def extract_all(
    extractors: dict[str, Extractor], batches: Iterable[np.ndarray]
) -> dict[str, dict[str, np.ndarray]]:
    """{family: {feature key: [N, D]}} of every extractor over uint8 image batches."""
    parts: dict[str, list[dict[str, np.ndarray]]] = {f: [] for f in extractors}
    for images in batches:
        for family, extractor in extractors.items():
            parts[family].append(extractor(images))
    return {
        f: {k: np.concatenate([p[k] for p in ps]) for k in ps[0]} for f, ps in parts.items() if ps
    }


def cached_reference_features(
    workdir: str,
    family: str,
    extractor: Extractor,
    reference: dict[str, Any],
    load: Callable[[], Iterable[np.ndarray]],
) -> dict[str, np.ndarray]:
    """The extractor's features of the reference images, from the workdir's cache or computed
    (`load()` yields the uint8 images in chunks) and cached under a name keyed by everything
    that defines them (the stored key is compared too)."""
    key = json.dumps(
        {"family": family, "extractor": extractor.describe, "reference": reference,
         "quantisation": sample_shards.QUANTISATION},
        sort_keys=True,
    )  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    r = reference
    name = f"{family}_{r['dataset']}_{r['split']}_{r['num']}_{digest}.npz"
    path = os.path.join(workdir, REFERENCE_DIR, name)
    if os.path.exists(path):
        try:
            with np.load(path) as f:
                if str(f["key"]) == key:
                    return {k: f[k] for k in f.files if k != "key"}
        except (OSError, ValueError, KeyError, EOFError):
            log.warning("%s is unreadable; computing the reference features again.", path)
    feats = extract_all({family: extractor}, load())[family]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, key=np.asarray(key), **feats)
    os.replace(tmp, path)
    return feats


def metric_protocol(
    name: str,
    samples: sample_shards.SampleProtocol,
    extractor: Extractor,
    reference: dict[str, Any] | None,
) -> dict[str, Any]:
    """What a metric's value depends on, written beside it."""
    out = {
        "metric": name,
        "num_samples": samples.num_samples,
        "seed": samples.seed,
        "workdir": samples.workdir,
        "ldm_step": samples.ldm_step,
        "sampler": samples.sampler,
        "steps": samples.steps,
        "timestep_spacing": samples.timestep_spacing,
        "steps_offset": samples.steps_offset,
        "eta": samples.eta,
        "guidance": samples.guidance,
        "label_rule": samples.label_rule,
        "quantisation": samples.quantisation,
        "reference": reference,
        **extractor.describe,
    }
    if name == "precision_recall":
        out["k"] = pr.DEFAULT_K
    if name == "is":
        out["splits"] = IS_SPLITS
    return out


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def protocol_difference(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two metric entries (or their "protocol" dicts), one line per field
    ("reference.split: 'test' != 'train'"); empty when the two results are comparable."""
    pa, pb = _flatten(a.get("protocol", a)), _flatten(b.get("protocol", b))
    keys = sorted(k for k in set(pa) | set(pb) if pa.get(k, "<absent>") != pb.get(k, "<absent>"))
    return [f"{k}: {pa.get(k, '<absent>')!r} != {pb.get(k, '<absent>')!r}" for k in keys]


def _score(
    name: str, fake: dict[str, np.ndarray], real: dict[str, np.ndarray] | None, labels: np.ndarray
) -> dict[str, Any]:
    """The value(s) of one metric from the features of the samples (and of the references)."""
    key = _FEATURES[name][1]
    if name in ("fd_classifier", "fd_lpips", "fid", "sfid"):
        return {"value": base_metrics.frechet_distance(fake[key], real[key])}
    if name == "precision_recall":
        result = pr.precision_recall(real[key], fake[key], k=pr.DEFAULT_K)
        return {"precision": result["precision"], "recall": result["recall"]}
    if name == "accuracy":
        predicted = np.argmax(fake[key], axis=-1)  # [N]
        classes = np.unique(labels)
        per_class = {int(c): float(np.mean(predicted[labels == c] == c)) for c in classes}
        return {"value": float(np.mean(predicted == labels)), "per_class": per_class}
    from ldm_jax.evaluation import fid_protocol  # "is": see `inception_extractor`

    score = fid_protocol.inception_score(fake[key], splits=IS_SPLITS)
    mean, std = score if isinstance(score, tuple) else (score, None)
    return {"value": float(mean), "std": None if std is None else float(std)}


def evaluate_generative(
    workdir: str,
    *,
    metrics: Sequence[str] | None = None,
    num_samples: int = 1000,
    samples_dir: str | None = None,
    reference_split: str = "test",
    num_reference: int | None = None,
    inception_weights: str | None = None,
    resize: str = "clean",
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    guidance: float | None = None,
    seed: int = 0,
    batch_size: int = 64,
    classifier_dir: str | None = None,
    timestep_spacing: str | None = None,
    step: int | None = None,
    extractors: dict[str, Extractor] | None = None,
    devices: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Samples (or reuses samples of) a workdir's model and scores them (module docstring).

    Args:
      workdir: a trained (or converted) workdir of a class-conditional or unconditional model.
      metrics: names from `METRICS` (None: `applicable_metrics`).
      num_samples: samples to generate (50000 for the standard protocols).
      samples_dir: shard folder (default `default_samples_dir`); reruns resume in it.
      reference_split / num_reference: real images compared with (default num_samples of them).
      inception_weights: FID Inception weights file (else LDM_JAX_INCEPTION_WEIGHTS).
      resize: Inception input resize, one of `feature_extractors.RESIZES` (`fid_protocol.MODES`).
      sampler, steps, eta, guidance: sampling settings (None: the workdir config's).
      seed: sampling seed; shard i uses fold_in(seed, i).
      batch_size: samples per shard (a multiple of the local device count) and feature batch.
      classifier_dir: the Fashion-MNIST classifier's cache.
      timestep_spacing: the sampler's grid (None: the workdir config's, else "leading").
      step: a kept LDM checkpoint to score instead of the latest.
      extractors: replaces extractor families by name ("classifier", "lpips_vgg",
        "inception"; tests inject fakes here).
      devices: local devices each shard is split over (default all).

    Returns:
      JSON-able {"samples": manifest, "samples_dir", "metrics": {name: {values..., "protocol"}},
      "seconds": {"sampling", "metrics"}}.
    """
    trained = load_trained_ldm(workdir, step)
    config = trained.config
    names = check_metrics(metrics or applicable_metrics(config), config)
    protocol = sample_shards.protocol_for(
        trained, sampler=sampler, steps=steps, eta=eta, guidance=guidance, seed=seed,
        num_samples=num_samples, shard_size=batch_size, timestep_spacing=timestep_spacing,
    )  # fmt: skip
    given = dict(extractors or {})
    families = {_FEATURES[n][0] for n in names}
    builders_ = {
        "classifier": lambda: classifier_extractor(classifier_dir, batch_size),
        "lpips_vgg": lambda: lpips_extractor(batch_size),
        "inception": lambda: inception_extractor(inception_weights, resize, batch_size, devices),
    }
    # Before any sampling: a missing weights file fails here, in one line.
    found = {f: given[f] if f in given else builders_[f]() for f in sorted(families)}
    samples_dir = samples_dir or default_samples_dir(workdir, protocol)

    start = time.perf_counter()
    sample_shards.generate_shards(trained, protocol, samples_dir, devices=devices)
    sampled = time.perf_counter() - start

    start = time.perf_counter()
    protocol = sample_shards.load_manifest(samples_dir)
    labels: list[np.ndarray] = []

    def sample_batches() -> Iterator[np.ndarray]:
        for images, shard_labels in sample_shards.iter_samples(samples_dir):
            labels.append(shard_labels)
            yield images  # [S, H, W, C] uint8

    fake_feats = extract_all(found, sample_batches())
    reference, load = None, None
    if any(_FEATURES[n][2] for n in names):
        reference, load = reference_set(config, reference_split, num_reference or num_samples)
    real_feats = {
        family: cached_reference_features(workdir, family, extractor, reference, load)
        for family, extractor in found.items()
        if any(_FEATURES[n][0] == family and _FEATURES[n][2] for n in names)
    }
    results = {}
    for name in names:
        family, _, needs_real = _FEATURES[name]
        extractor = found[family]
        ref = reference if needs_real else None
        results[name] = {
            **_score(name, fake_feats[family], real_feats.get(family), np.concatenate(labels)),
            "protocol": metric_protocol(name, protocol, extractor, ref),
        }
    return {
        "samples": protocol.to_json(),
        "samples_dir": os.path.abspath(samples_dir),
        "metrics": results,
        "seconds": {
            "sampling": round(sampled, 1),
            "metrics": round(time.perf_counter() - start, 1),
        },
    }
