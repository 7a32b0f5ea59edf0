"""Caption retrieval of a text-to-image workdir on its held-out captions.

`python -m ldm_jax.evaluate --workdir W --what text2img [--num N --candidates K]` runs
`evaluate_workdir`: one sample per held-out caption (the workdir's test split: for noto_emoji the
144 held-out emoji, each its own caption), scored by `caption_retrieval` (module docstring there:
candidates, chance 1/K, ties) with LPIPS-VGG (the primary distance) and the mean squared pixel
difference. Beside the samples, on the same queries and candidate sets:

  first_stage_reconstructions  D(E(x)) of each query caption's own real image: the image a
      perfect LDM would decode, so the accuracy a generator reaches through this first stage
      (near 1 for a good autoencoder; exactly 1 for the identity first stage, where it says
      nothing). The real image itself would score 1 trivially, so it is not reported.
  nearest_train_caption  for each held-out caption, the training image whose caption is closest
      in MiniLM sentence embedding (cosine): what a generator that only recalls the training
      emoji of the most similar caption would score. Samples above it compose the caption's
      content rather than look it up; below it, the text encoder or the U-Net loses information
      that the nearest caption still carries.

Sampling uses the workdir config's sampler, steps, eta and guidance scale unless given; every
query's noise comes from the seed (batch b uses fold_in(PRNGKey(seed), b)).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ldm_jax.config import builders
from ldm_jax.config.model_config import model_config
from ldm_jax.config.validation import ConfigError
from ldm_jax.data import pipeline
from ldm_jax.evaluation import caption_retrieval as cr
from ldm_jax.evaluation.conditioned_samples import sample_per_condition
from ldm_jax.evaluation.reconstruction import reconstruct_images
from ldm_jax.models.minilm_encoder import frozen_minilm
from ldm_jax.models.tokenizer import WordPieceTokenizer
from ldm_jax.sampling.generate import TEXT_CONTEXT_LENGTH, fixed_text_context
from ldm_jax.workdir.reader import TrainedLDM, load_trained_ldm
from ldm_jax.workdir.text_encoder import prompt_encoder

TEXT_CONDITIONS = ("text", "context")
BASELINE_TOKENS = 64  # MiniLM tokens per caption for the nearest-caption baseline


def check_text2img(config) -> str:
    """The model's condition kind ("text" or "context"); ConfigError for other models."""
    kind = builders.condition_kind(config)
    if kind not in TEXT_CONDITIONS:
        raise ConfigError(
            f"evaluate --what text2img scores text-conditioned models; this workdir's model is "
            f"conditioned on {kind!r}. Use --what samples (class-conditional Fashion-MNIST) or "
            "--what reconstruction."
        )
    return kind


def caption_conditions(trained: TrainedLDM, captions: Sequence[str]) -> tuple[Any, Any]:
    """(cond [N, ...], uncond [1, ...]) of `captions` and of the empty caption, as the sample CLI
    feeds them: token ids [.., L] from the workdir's vocabulary (BERT) or contexts [.., L, D]
    (the frozen MiniLM, a Stable Diffusion workdir's CLIP; the fixed stand-in of the SD `:tiny`
    variants)."""
    config = trained.config
    cond_cfg = model_config(config)["cond_stage"]
    texts = [str(c) for c in captions]
    if check_text2img(config) == "text":
        vocab = os.path.join(trained.workdir, cond_cfg.get("vocab") or "vocab.txt")
        if not os.path.isfile(vocab):
            raise ConfigError(f"The text model's vocabulary {vocab} is missing.")
        tokenizer = WordPieceTokenizer.from_file(vocab, max_length=cond_cfg.get("max_seq_len", 77))
        return tokenizer(texts), tokenizer([""])  # [N, L], [1, L]
    encoder = None
    if not config.get("train", {}).get("fixed_text_context", False):
        encoder = prompt_encoder(trained.workdir, cond_cfg)  # MiniLM, or the workdir's CLIP
    if encoder is not None:
        return encoder(texts), encoder([""])  # [N, L, D], [1, L, D]
    if not config.train.get("fixed_text_context"):
        raise ConfigError(
            f"This workdir's {cond_cfg['kind']} text encoder has no weights (config.model."
            "cond_stage names no text_encoder folder); import a Stable Diffusion model with "
            "python -m ldm_jax.convert to get one."
        )
    dim = model_config(config)["unet"]["context_dim"]
    return (
        fixed_text_context(texts, TEXT_CONTEXT_LENGTH, dim),
        fixed_text_context([""], TEXT_CONTEXT_LENGTH, dim),
    )


def sample_captions(
    trained: TrainedLDM,
    captions: Sequence[str],
    *,
    sampler: str,
    steps: int,
    guidance: float,
    eta: float,
    seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:
    """One sample per caption, images [N, H, W, C] float32 in [-1, 1] (one compiled batch
    shape: the last batch is padded by repeating its last condition)."""
    cond, uncond = caption_conditions(trained, captions)
    return sample_per_condition(
        trained, cond, uncond, sampler=sampler, steps=steps, guidance=guidance, eta=eta,
        seed=seed, batch_size=batch_size,
    )  # fmt: skip


def nearest_caption_images(
    queries: Sequence[str], train_captions: Sequence[str], train_images: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """For each query caption, the training image whose caption is nearest in MiniLM sentence
    embedding (cosine), and that caption."""
    encoder = frozen_minilm(BASELINE_TOKENS)
    q = encoder.sentence_embeddings(list(queries))  # [Q, 384], unit
    t = encoder.sentence_embeddings([str(c) for c in train_captions])  # [T, 384], unit
    best = np.argmax(q @ t.T, axis=1)  # [Q]
    return train_images[best], [str(train_captions[i]) for i in best]


def _split(trained: TrainedLDM, split: str) -> dict[str, np.ndarray]:
    d = trained.config.data
    source = builders.build_data_source(trained.config, split)
    out = pipeline.load_split_dict(source, d.image_size, d.get("channels"))
    if "caption" not in out:
        raise ConfigError(f"config.data.name: {d.name!r} has no captions to retrieve.")
    return out


def _score(queries, refs, image_caption, candidates, distances) -> dict[str, Any]:
    return {
        name: cr.caption_retrieval(queries, refs, image_caption, candidates, fn)
        for name, fn in distances.items()
    }


def evaluate_workdir(
    workdir: str,
    num: int | None = None,
    candidates: int = 10,
    seed: int = 0,
    guidance: float | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    batch_size: int = 64,
    baselines: bool = True,
) -> dict[str, Any]:
    """Caption retrieval of a text-to-image workdir (module docstring); a JSON-able dict."""
    trained = load_trained_ldm(workdir)
    config, s = trained.config, trained.config.sample
    kind = check_text2img(config)
    guidance = s.guidance_scale if guidance is None else guidance
    sampler, steps = sampler or s.sampler, steps or s.steps
    eta = s.eta if eta is None else eta
    test = _split(trained, "test")
    refs = test["image"]  # [N, H, W, C]
    groups = cr.caption_set(test["caption"])
    try:
        queries = cr.choose_queries(len(groups.captions), num, seed)
        cands = cr.candidate_sets(queries, len(groups.captions), candidates, seed)
    except ValueError as e:
        raise ConfigError(f"--num/--candidates: {e}") from None
    texts = [groups.captions[q] for q in queries]
    start = time.perf_counter()
    samples = sample_captions(
        trained, texts, sampler=sampler, steps=steps, guidance=guidance, eta=eta, seed=seed,
        batch_size=batch_size,
    )  # fmt: skip
    sampling_s = time.perf_counter() - start
    start = time.perf_counter()
    distances = {"lpips_vgg": cr.lpips_pair_distance("vgg16"), "pixel_l2": cr.pixel_pair_distance}
    score = lambda images: _score(images, refs, groups.image_caption, cands, distances)  # noqa: E731
    result: dict[str, Any] = {"samples": score(samples)}
    if baselines:
        first_image = np.array([np.flatnonzero(groups.image_caption == q)[0] for q in queries])
        reconstructed = reconstruct_images(trained, refs[first_image])
        result["first_stage_reconstructions"] = score(reconstructed)
        train = _split(trained, config.data.train_split)
        nearest, _ = nearest_caption_images(texts, train["caption"], train["image"])
        result["nearest_train_caption"] = score(nearest)
    protocol = {
        "split": "test",
        "num_captions": len(groups.captions),
        "num_queries": len(queries),
        "candidates": candidates,
        "chance": 1.0 / candidates,
        "seed": seed,
        "samples_per_caption": 1,
        "sampler": sampler,
        "steps": steps,
        "eta": eta,
        "guidance": guidance,
        "distance": "lpips_vgg (primary), pixel_l2",
        "reference": "nearest real test image of each candidate caption",
    }
    return {
        "what": "text2img",
        "metric": "caption retrieval top-1 accuracy among K candidate captions",
        "workdir": workdir,
        "ldm_step": trained.step,
        "condition": kind,
        "cond_stage": model_config(config)["cond_stage"]["kind"],
        "protocol": protocol,
        "accuracy": result["samples"]["lpips_vgg"]["accuracy"],  # the headline figure
        "chance": protocol["chance"],
        **result,
        "seconds": {
            "sampling": round(sampling_s, 1),
            "scoring": round(time.perf_counter() - start, 1),
        },
    }
