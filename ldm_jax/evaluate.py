"""Scores a trained workdir; prints one JSON line and writes it into the workdir.

  python -m ldm_jax.evaluate --workdir runs/quickstart [--per_class 16 --guidance 2.0]
  python -m ldm_jax.evaluate --workdir runs/ae --what reconstruction [--num 1000]
  python -m ldm_jax.evaluate --workdir runs/t2i --what text2img [--num 144 --candidates 10]
  python -m ldm_jax.evaluate --workdir runs/l2i --what layout [--num 500]

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
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from ldm_jax import cli_errors
from ldm_jax.config.validation import SAMPLERS
from ldm_jax.evaluation import layout_accuracy, reconstruction, text2img
from ldm_jax.evaluation.report import evaluate
from ldm_jax.training import logging as log
from ldm_jax.workdir.reader import load_trained_ldm

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir to evaluate.")
_WHAT = flags.DEFINE_enum(
    "what",
    "samples",
    ["samples", "reconstruction", "text2img", "layout"],
    "Score class-conditional samples, first-stage reconstructions, text-to-image or "
    "layout-to-image samples.",
)
_NUM = flags.DEFINE_integer(
    "num",
    None,
    "reconstruction: first N images of the split; text2img: N captions (all); layout: the "
    "first N test layouts (all).",
)
_CANDIDATES = flags.DEFINE_integer(
    "candidates", 10, "text2img: captions each sample is retrieved among (chance 1/K)."
)
_BASELINES = flags.DEFINE_bool(
    "baselines", True, "text2img: also score reconstructions and the nearest-caption baseline."
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
_CLASSIFIER_DIR = flags.DEFINE_string(
    "classifier_dir", None, "Classifier cache (default ~/.cache/ldm_jax/...)."
)
flags.mark_flags_as_required(["workdir"])

PROGRAM = "python -m ldm_jax.evaluate"


def main(argv):
    log.show_own_status_only()
    with cli_errors.user_errors_as_exit(PROGRAM):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        if _WHAT.value == "reconstruction":
            result = reconstruction.evaluate_workdir(
                _WORKDIR.value,
                _NUM.value,
                _SPLIT.value,
                _BATCH.value,
                _FEATURES.value,
                _CLASSIFIER_DIR.value,
            )
            _write(result, "eval_reconstruction.json")
            return
        if _WHAT.value == "text2img":
            result = text2img.evaluate_workdir(
                _WORKDIR.value,
                num=_NUM.value,
                candidates=_CANDIDATES.value,
                seed=_SEED.value,
                guidance=_GUIDANCE.value,
                sampler=_SAMPLER.value,
                steps=_STEPS.value,
                eta=_ETA.value,
                batch_size=_BATCH.value,
                baselines=_BASELINES.value,
            )
            _write(result, "eval_text2img.json")
            return
        if _WHAT.value == "layout":
            result = layout_accuracy.evaluate_workdir(
                _WORKDIR.value,
                num=_NUM.value,
                seed=_SEED.value,
                guidance=_GUIDANCE.value,
                sampler=_SAMPLER.value,
                steps=_STEPS.value,
                eta=_ETA.value,
                batch_size=_BATCH.value,
                classifier_dir=_CLASSIFIER_DIR.value,
            )
            _write(result, "eval_layout.json")
            return
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
        _write(result, "eval.json")


def _write(result: dict, name: str) -> None:
    """Writes `result` to <workdir>/name and prints it as one JSON line."""
    with open(os.path.join(_WORKDIR.value, name), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    cli_errors.run(main, PROGRAM)
