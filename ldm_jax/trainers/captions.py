"""Captions as stage-2 conditions: the text model's WordPiece vocabulary and token ids, or the
per-caption context (`conditions.text_context`: the frozen MiniLM's, or the fixed stand-in of
the SD tiny variants).

A text model (cond stage "bert") reads its vocabulary from `<workdir>/vocab.txt`
(`config.model.cond_stage.vocab = "vocab.txt"`, which `python -m ldm_jax.sample --task text2img`
reads too). `run.py` copies a given vocabulary there; without one, `ensure_vocab` builds it from
the training captions: the special tokens [PAD] [UNK] [CLS] [SEP] [MASK], then every word of
the captions (BERT's basic tokenisation, lowercased) in sorted order.
"""

from __future__ import annotations

import os
import shutil

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from ldm_jax.config import builders
from ldm_jax.config.model_config import model_config
from ldm_jax.config.validation import ConfigError
from ldm_jax.models.tokenizer import WordPieceTokenizer, basic_tokenize
from ldm_jax.trainers.conditions import layout_token_arrays, text_context
from ldm_jax.training import logging as log
from ldm_jax.workdir import layout

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VOCAB_FIELD = "vocab.txt"


def build_vocab(texts: np.ndarray | list[str]) -> list[str]:
    """The special tokens, then the sorted distinct words of `texts`."""
    words = sorted({w for text in texts for w in basic_tokenize(str(text))})
    return list(SPECIAL_TOKENS) + [w for w in words if w not in SPECIAL_TOKENS]


def prepare_vocab_field(config: ml_collections.ConfigDict, workdir: str) -> None:
    """For text models: copies a given `cond_stage.vocab` into `<workdir>/vocab.txt` and points
    the config at it (before config.json is written), so the workdir is self-contained."""
    if builders.condition_kind(config) != "text":
        return
    cond = config.model.cond_stage
    given = cond.get("vocab") or ""
    target = layout.vocab_path(workdir)
    if given and given != VOCAB_FIELD:
        if not os.path.isfile(given):
            raise ConfigError(f"config.model.cond_stage.vocab: {given} is not a file.")
        if jax.process_index() == 0:
            shutil.copyfile(given, target)
    cond.vocab = VOCAB_FIELD


def ensure_vocab(config: ml_collections.ConfigDict, workdir: str, texts: np.ndarray) -> str:
    """`<workdir>/vocab.txt`, built from `texts` when missing (process 0 writes)."""
    path = layout.vocab_path(workdir)
    if jax.process_index() == 0 and not os.path.isfile(path):
        vocab = build_vocab(texts)
        log.info("ldm: built a WordPiece vocabulary of %d tokens -> %s", len(vocab), path)
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(vocab) + "\n")
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("ldm_vocab")
    return path


def load_tokenizer(config: ml_collections.ConfigDict, workdir: str) -> WordPieceTokenizer:
    """The text model's tokenizer from `<workdir>/vocab.txt`, checked against vocab_size."""
    cond = model_config(config)["cond_stage"]
    path = layout.vocab_path(workdir)
    tokenizer = WordPieceTokenizer.from_file(path, max_length=cond.get("max_seq_len", 77))
    size = cond.get("vocab_size", 30522)
    if max(tokenizer.vocab.values()) >= size:
        raise ConfigError(
            f"config.model.cond_stage.vocab_size={size} is smaller than the vocabulary {path} "
            f"({max(tokenizer.vocab.values()) + 1} tokens); raise it or give a smaller vocab."
        )
    return tokenizer


def caption_arrays(
    config: ml_collections.ConfigDict, split: dict[str, np.ndarray], workdir: str, key: str
) -> np.ndarray:
    """Per-example "tokens" int32 [N, L] (text models; layout models: the layout's tokens) or
    "context" float32 [N, L, D]."""
    if key == "tokens" and builders.condition_kind(config) == "layout":
        return layout_token_arrays(config, split)  # [N, L]
    texts = split.get("caption")
    if texts is None:
        raise ConfigError(
            f"config.data.name: dataset {config.data.name!r} has no captions, which this text-"
            "conditioned model needs; use a dataset with captions (e.g. synthetic_shapes, or "
            "an image_folder with a captions file)."
        )
    texts = [str(t) for t in texts]
    if key == "tokens":
        ensure_vocab(config, workdir, texts)
        return load_tokenizer(config, workdir)(texts)  # [N, L]
    return text_context(config, texts, workdir)  # [N, L, D]
