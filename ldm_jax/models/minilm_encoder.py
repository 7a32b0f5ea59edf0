"""Captions -> frozen MiniLM contexts: the tau_theta of cond stage "frozen_minilm".

`MiniLMTextEncoder` joins the three pieces: the WordPiece tokenizer on the package's
`vocab.txt` ([CLS] text [SEP] then [PAD] up to `max_length`), the pretrained weights
(`minilm_weights.load_params`, never trained) and one jitted `MiniLM` forward. Its context is the
last hidden state [N, max_length, 384], padding rows included (each a fixed function of the
caption, as Stable Diffusion's CLIP context). Training (the contexts of a dataset's captions,
computed once) and sampling (the prompt and the empty caption) both go through
`frozen_minilm(max_length)`, so they see the same encoder.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np

from ldm_jax.models import minilm_weights
from ldm_jax.models.minilm import MiniLM, sentence_embedding
from ldm_jax.models.tokenizer import WordPieceTokenizer

CONTEXT_DIM = 384  # all-MiniLM-L6-v2's hidden size: the U-Net's context_dim
MAX_BATCH = 64  # captions per forward pass


def _padded_batch(n: int) -> int:
    """The batch a chunk of n captions is padded to: a power of two up to MAX_BATCH (few shapes,
    few compilations)."""
    return min(MAX_BATCH, 1 << max(n - 1, 0).bit_length())


class MiniLMTextEncoder:
    """The frozen all-MiniLM-L6-v2 encoder over lists of captions.

    Attributes:
      tokenizer: WordPiece over the package's vocabulary, `max_length` ids per caption.
      params: the pretrained parameter tree (shared, read-only).
    """

    def __init__(self, max_length: int = 77):
        self.model = MiniLM()
        if not 2 <= max_length <= self.model.config.max_positions:
            raise ValueError(f"MiniLM max_length must be in [2, 512], got {max_length}.")
        self.tokenizer = WordPieceTokenizer.from_file(
            minilm_weights.vocab_path(), max_length=max_length
        )
        self.params = jax.device_put(minilm_weights.load_params())
        self._forward = jax.jit(lambda p, ids: self.model.apply({"params": p}, ids))

    @property
    def max_length(self) -> int:
        return self.tokenizer.max_length

    def hidden_states(self, ids: np.ndarray) -> np.ndarray:
        """Token ids [N, L] -> last hidden state [N, L, 384] float32, in chunks."""
        out = np.empty((len(ids), ids.shape[1], CONTEXT_DIM), np.float32)
        for start in range(0, len(ids), MAX_BATCH):
            chunk = ids[start : start + MAX_BATCH]  # [n, L]
            padded = np.zeros((_padded_batch(len(chunk)), ids.shape[1]), np.int32)
            padded[: len(chunk)] = chunk
            out[start : start + len(chunk)] = np.asarray(self._forward(self.params, padded))[
                : len(chunk)
            ]
        return out

    def __call__(self, captions: Sequence[str]) -> np.ndarray:
        """Captions -> contexts [N, max_length, 384] float32."""
        return self.hidden_states(self.tokenizer(list(captions)))

    def sentence_embeddings(self, captions: Sequence[str]) -> np.ndarray:
        """Captions -> unit sentence embeddings [N, 384] (mean over the real tokens)."""
        ids = self.tokenizer(list(captions))
        return np.asarray(sentence_embedding(self.hidden_states(ids), ids != 0))


@functools.lru_cache(maxsize=4)
def frozen_minilm(max_length: int = 77) -> MiniLMTextEncoder:
    """The process's encoder for `max_length` (built once: weights read, forward compiled)."""
    return MiniLMTextEncoder(max_length)
