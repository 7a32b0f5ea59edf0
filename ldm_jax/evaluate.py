"""Scores a trained workdir; prints one JSON line and writes it into the workdir.

  python -m ldm_jax.evaluate --workdir runs/quickstart [--per_class 16 --guidance 2.0]
  python -m ldm_jax.evaluate --workdir runs/ae --what reconstruction [--num 1000]
  python -m ldm_jax.evaluate --workdir runs/t2i --what text2img [--num 144 --candidates 10]
  python -m ldm_jax.evaluate --workdir runs/l2i --what layout [--num 500]
  python -m ldm_jax.evaluate --workdir runs/sr --what superres [--num 1000]
  python -m ldm_jax.evaluate --workdir runs/inp --what inpaint --reference_workdir runs/uncond
  python -m ldm_jax.evaluate --workdir runs/seg --what semantic
  python -m ldm_jax.evaluate --workdir runs/quickstart --what edit [--strengths 0.2,0.6,1.0]
  python -m ldm_jax.evaluate --workdir runs/quickstart --what generative [--num_samples 50000 \
      --metrics fd_classifier,fd_lpips,precision_recall,accuracy,fid,sfid,is \
      --inception_weights pt_inception-2015-12-05-6726825d.pth]

`--what samples` (the default, `eval.json`):

Reports: the classifier's own test accuracy; the autoencoder's reconstruction PSNR on the test
split; for `--per_class` samples of every class: the fraction classified as the requested
class, the diversity ratio (mean pairwise pixel distance within a class over the same for as
many real test images of that class) and the Frechet distance in the classifier's hidden
features against real test images, divided by the distance between two disjoint real sets of the
same size. The classifier is trained on first use (about a minute) and cached.

`--what reconstruction` (`eval_reconstruction.json`, needs only the first stage): PSNR, SSIM,
LPIPS-VGG, codebook usage and perplexity for VQ models, and the Frechet distance of real vs
reconstructed test images in the classifier's features (32x32 Fashion-MNIST) or in pooled
LPIPS-VGG features (other data); see `ldm_jax.evaluation.reconstruction`.

`--what text2img` (`eval_text2img.json`, text-conditioned models): caption retrieval accuracy
of one sample per held-out caption (`--num` of them drawn with the seed, default all) among
`--candidates` K captions (its own and K - 1 random others; chance 1/K), the sample matched to
each candidate's real test image by LPIPS-VGG (and by pixel distance), beside the same figure for
first-stage reconstructions of the real images and for the training image of the nearest caption
(`--nobaselines` skips both); the protocol (K, seed, sampler, steps, eta, guidance) is in the
JSON. See `ldm_jax.evaluation.caption_retrieval` and `ldm_jax.evaluation.text2img`.

`--what layout` (`eval_layout.json`, layout-to-image models): one sample per layout of the first
`--num` test canvases (default all); the item inside each requested box is cropped and classified
by the Fashion-MNIST classifier; accuracy against the requested classes, beside chance (1/10) and
the same procedure on the real test canvases. See `ldm_jax.evaluation.layout_accuracy`.

`--what superres` (`eval_superres.json`): one sample per low-resolution input made from the first
`--num` test images (default 1000) as in training; PSNR, SSIM and LPIPS-VGG against the ground
truth beside bicubic and nearest upsampling and the first stage's reconstruction (the ceiling).
See `ldm_jax.evaluation.superres`.

`--what inpaint` (`eval_inpaint.json`): the first `--num` test images (default 1000) under fixed
large masks drawn from the seed; PSNR inside the hole and LPIPS-VGG of the pasted result, beside
mean filling, the first stage's reconstruction and, with `--reference_workdir`, masked sampling
of a model trained without masks. See `ldm_jax.evaluation.inpainting`.

`--what semantic` (`eval_semantic.json`): one sample per held-out emoji label map (default all);
mIoU and pixel accuracy of the map re-derived from each sample, beside the real images' maps (the
ceiling), the samples scored against other images' maps (chance) and reconstructions. See
`ldm_jax.evaluation.semantic`.

`--what edit` (`eval_edit.json`, class-conditional Fashion-MNIST): the first `--num` test images
(default 200) edited by img2img to another class at each of `--strengths`; per strength the
LPIPS and RMSE from the input and the fractions classified as the target and the source class.
See `ldm_jax.evaluation.editing`.

`--what generative` (`eval_generative.json`, class-conditional or unconditional models):
`--num_samples` samples (default 1000; 50000 for the standard protocols) streamed to
`--samples_dir` (default `<workdir>/eval_samples/<protocol>`) in shards of `--batch_size`; a
rerun after a kill resumes there, and several processes (`--coordinator_address`,
`--num_processes`, `--process_id`, as for training) share the shards. `--metrics` (comma list;
default the offline ones that apply): fd_classifier, fd_lpips, precision_recall, accuracy, and
with the FID Inception-v3 weights (`--inception_weights PATH` or LDM_JAX_INCEPTION_WEIGHTS;
`--resize clean|legacy_pytorch|legacy_tensorflow`) fid, sfid, is; against the first
`--num_reference` images (default `--num_samples`) of `--reference_split`. Each metric states
its protocol (sample count, seed, sampler, reference set, features, resize) in the JSON.
See `ldm_jax.evaluation.generative`.
"""

from __future__ import annotations

from ldm_jax.training import host_memory

# First, before the heavy imports: glibc reads its tunables only when a process starts.
host_memory.rerun_with_huge_pages("ldm_jax.evaluate")

import json
import os
import sys
from collections.abc import Callable

import jax
from absl import app, flags

from ldm_jax import cli_errors
from ldm_jax.config.validation import SAMPLERS
from ldm_jax.evaluation import (
    editing,
    feature_extractors,
    generative,
    inpainting,
    layout_accuracy,
    reconstruction,
    semantic,
    superres,
    text2img,
)
from ldm_jax.evaluation.report import evaluate
from ldm_jax.interop.tensors import WeightMismatchError, one_line_summary
from ldm_jax.interop.torch_pickle import CheckpointFormatError
from ldm_jax.parallel import distributed
from ldm_jax.training import logging as log
from ldm_jax.workdir.reader import load_trained_ldm

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir to evaluate.")
_WHAT = flags.DEFINE_enum(
    "what",
    "samples",
    [
        "samples",
        "reconstruction",
        "text2img",
        "layout",
        "superres",
        "inpaint",
        "semantic",
        "edit",
        "generative",
    ],
    "What to score: class-conditional samples, first-stage reconstructions, or one task's "
    "samples (see the module docstring).",
)
_NUM = flags.DEFINE_integer(
    "num",
    None,
    "reconstruction: first N images of the split; text2img: N captions (all); layout: the "
    "first N test layouts (all); superres, inpaint: the first N test images (1000); semantic: "
    "the first N test maps (all); edit: the first N test images (200).",
)
_CANDIDATES = flags.DEFINE_integer(
    "candidates", 10, "text2img: captions each sample is retrieved among (chance 1/K)."
)
_BASELINES = flags.DEFINE_bool(
    "baselines", True, "text2img: also score reconstructions and the nearest-caption baseline."
)
_REFERENCE = flags.DEFINE_string(
    "reference_workdir",
    None,
    "inpaint: also score masked sampling with this workdir's model (trained without masks).",
)
_STRENGTHS = flags.DEFINE_string(
    "strengths", "0.2,0.4,0.6,0.8,1.0", "edit: the img2img strengths of the curve."
)
_SPLIT = flags.DEFINE_string("split", "test", "reconstruction: the data split.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "reconstruction, text2img: images per batch.")
_FEATURES = flags.DEFINE_enum(
    "features", "auto", list(reconstruction.FEATURES), "reconstruction: feature space of the FD."
)
_PER_CLASS = flags.DEFINE_integer("per_class", 16, "Samples per class.")
_GUIDANCE = flags.DEFINE_float("guidance", None, "Guidance scale (default: the config's).")
_SAMPLER = flags.DEFINE_enum("sampler", None, list(SAMPLERS), "Sampler (default: the config's).")
_STEPS = flags.DEFINE_integer("steps", None, "Sampler steps (default: the config's).")
_ETA = flags.DEFINE_float("eta", None, "DDIM eta (default: the config's sample.eta).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for sampling and for choosing real images.")
_STEP = flags.DEFINE_integer(
    "step",
    None,
    "samples, generative: score this kept LDM checkpoint instead of the latest (quality "
    "against training steps; keep them with --config.train.keep_checkpoints).",
)
_SPACING = flags.DEFINE_enum(
    "timestep_spacing",
    None,
    ["leading", "trailing", "linspace"],
    "samples, generative: the sampler's timestep grid (default: the config's, else leading; "
    "trailing starts every step count at t = T - 1, see experiments/samplers/README.md).",
)
_CLASSIFIER_DIR = flags.DEFINE_string(
    "classifier_dir", None, "Classifier cache (default ~/.cache/ldm_jax/...)."
)
_GEN_METRICS = flags.DEFINE_string(
    "metrics",
    None,
    "generative: comma list of " + ",".join(generative.METRICS) + " (default: the offline "
    "metrics that apply to the workdir).",
)
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1000, "generative: samples to score.")
_SAMPLES_DIR = flags.DEFINE_string(
    "samples_dir", None, "generative: shard folder (default <workdir>/eval_samples/<protocol>)."
)
_REFERENCE_SPLIT = flags.DEFINE_string(
    "reference_split", "test", "generative: split of the real images compared with."
)
_NUM_REFERENCE = flags.DEFINE_integer(
    "num_reference", None, "generative: first N real images of the split (--num_samples)."
)
_INCEPTION = flags.DEFINE_string(
    "inception_weights",
    None,
    f"generative fid/sfid/is: the FID Inception-v3 weights (else ${generative.INCEPTION_ENV}).",
)
_RESIZE = flags.DEFINE_enum(
    "resize", "clean", list(feature_extractors.RESIZES), "generative: Inception input resize."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "generative, multi-process: HOST:PORT of process 0 (with --num_processes, --process_id).",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process: process count.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.")
flags.mark_flags_as_required(["workdir"])

PROGRAM = "python -m ldm_jax.evaluate"


def _sampling() -> dict:
    """The sampling flags every sample-based metric takes (None: the workdir config's)."""
    return dict(
        seed=_SEED.value,
        sampler=_SAMPLER.value,
        steps=_STEPS.value,
        eta=_ETA.value,
        batch_size=_BATCH.value,
    )


def _guided() -> dict:
    return dict(_sampling(), guidance=_GUIDANCE.value)


def _strengths() -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in _STRENGTHS.value.split(",") if s.strip())
    except ValueError:
        values = ()
    if not values or any(not 0.0 < s <= 1.0 for s in values):
        raise app.UsageError(
            f"--strengths must be comma-separated numbers in (0, 1], got {_STRENGTHS.value!r}."
        )
    return values


# --what -> (output file in the workdir, the call on that workdir)
_METRICS: dict[str, tuple[str, Callable[[str], dict]]] = {
    "reconstruction": (
        "eval_reconstruction.json",
        lambda w: reconstruction.evaluate_workdir(
            w, _NUM.value, _SPLIT.value, _BATCH.value, _FEATURES.value, _CLASSIFIER_DIR.value
        ),
    ),
    "text2img": (
        "eval_text2img.json",
        lambda w: text2img.evaluate_workdir(
            w,
            num=_NUM.value,
            candidates=_CANDIDATES.value,
            baselines=_BASELINES.value,
            **_guided(),
        ),
    ),
    "layout": (
        "eval_layout.json",
        lambda w: layout_accuracy.evaluate_workdir(
            w, num=_NUM.value, classifier_dir=_CLASSIFIER_DIR.value, **_guided()
        ),
    ),
    "superres": (
        "eval_superres.json",
        lambda w: superres.evaluate_workdir(
            w, num=_NUM.value, classifier_dir=_CLASSIFIER_DIR.value, **_sampling()
        ),
    ),
    "inpaint": (
        "eval_inpaint.json",
        lambda w: inpainting.evaluate_workdir(
            w, num=_NUM.value, reference_workdir=_REFERENCE.value, **_sampling()
        ),
    ),
    "semantic": (
        "eval_semantic.json",
        lambda w: semantic.evaluate_workdir(w, num=_NUM.value, **_sampling()),
    ),
    "edit": (
        "eval_edit.json",
        lambda w: editing.evaluate_workdir(
            w,
            num=_NUM.value,
            strengths=_strengths(),
            classifier_dir=_CLASSIFIER_DIR.value,
            **_guided(),
        ),
    ),
}


def _class_samples(workdir: str) -> dict:
    """`--what samples`: class accuracy, diversity and FD of class-conditional samples."""
    trained = load_trained_ldm(workdir, _STEP.value)
    cfg = trained.config.sample
    guidance = cfg.guidance_scale if _GUIDANCE.value is None else _GUIDANCE.value
    return evaluate(
        trained,
        _PER_CLASS.value,
        guidance,
        _SAMPLER.value or cfg.sampler,
        _STEPS.value or cfg.steps,
        _SEED.value,
        _CLASSIFIER_DIR.value,
        cfg.eta if _ETA.value is None else _ETA.value,
        _SPACING.value,
    )


_METRICS["samples"] = ("eval.json", _class_samples)


def _generative(workdir: str) -> dict:
    """`--what generative`: sharded sampling, then FD / precision-recall / accuracy / FID."""
    try:
        distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    names = _GEN_METRICS.value.split(",") if _GEN_METRICS.value else None
    return generative.evaluate_generative(
        workdir,
        metrics=names,
        num_samples=_NUM_SAMPLES.value,
        samples_dir=_SAMPLES_DIR.value,
        reference_split=_REFERENCE_SPLIT.value,
        num_reference=_NUM_REFERENCE.value,
        inception_weights=_INCEPTION.value,
        resize=_RESIZE.value,
        guidance=_GUIDANCE.value,
        classifier_dir=_CLASSIFIER_DIR.value,
        timestep_spacing=_SPACING.value,
        step=_STEP.value,
        **_sampling(),
    )


_METRICS["generative"] = ("eval_generative.json", _generative)


def main(argv):
    log.show_own_status_only()
    with cli_errors.user_errors_as_exit(PROGRAM):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        name, score = _METRICS[_WHAT.value]
        try:
            result = score(_WORKDIR.value)
        except (CheckpointFormatError, WeightMismatchError) as e:  # --inception_weights
            sys.exit(f"{PROGRAM}: error: {one_line_summary(str(e))}")
        _write(result, name)


def _write(result: dict, name: str) -> None:
    """Writes `result` to <workdir>/name and prints it as one JSON line (process 0 only)."""
    if jax.process_index() != 0:
        return
    with open(os.path.join(_WORKDIR.value, name), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    cli_errors.run(main, PROGRAM)
