"""Captions -> frozen CLIP contexts: Stable Diffusion's tau_theta (SD v1's CLIP, SD v2's OpenCLIP).

`ClipPromptEncoder` joins a `ClipTokenizer` (bos, ids, eos, pad up to `max_length`), a loaded
`ClipTextTransformer` parameter tree (never trained) and one jitted forward. Its context is
`hidden` [N, max_length, D] float32: the final LayerNorm of layer num_layers - skip_last_layers,
padding rows included, as the SD pipelines feed the U-Net (SD v1: skip 0; SD v2: skip 1).

Batches are cut into chunks of at most `MAX_BATCH` captions and each chunk padded to a power of
two, so new prompts reuse the few compiled shapes. The folder-reading constructor
(`ldm_jax.interop.clip_weights.clip_prompt_encoder`) lives in `interop/`, which may import
`models/` (the reverse is not allowed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from ldm_jax.models.bpe_tokenizer import ClipTokenizer
from ldm_jax.models.clip_text import ClipTextConfig, ClipTextTransformer

MAX_BATCH = 64  # captions per forward pass


def padded_batch(n: int) -> int:
    """The batch a chunk of n captions is padded to: a power of two up to MAX_BATCH."""
    return min(MAX_BATCH, 1 << max(n - 1, 0).bit_length())


class ClipPromptEncoder:
    """A frozen CLIP text encoder over lists of captions.

    Attributes:
      config: the text transformer's architecture.
      tokenizer: the BPE tokenizer (`max_length` ids per caption).
      params: the parameter tree on device (shared, read-only).
      skip_last_layers: 0 = last layer (SD v1), 1 = penultimate (SD v2, diffusers clip_skip=1).
    """

    def __init__(
        self,
        config: ClipTextConfig,
        params: Mapping[str, Any],
        tokenizer: ClipTokenizer,
        skip_last_layers: int = 0,
    ):
        if not 0 <= skip_last_layers < config.num_layers:
            raise ValueError(
                f"ClipPromptEncoder: skip_last_layers={skip_last_layers} must be in "
                f"[0, {config.num_layers - 1}]."
            )
        if not 2 <= tokenizer.max_length <= config.max_positions:
            raise ValueError(
                f"ClipPromptEncoder: the tokenizer's max_length {tokenizer.max_length} must be in "
                f"[2, {config.max_positions}] (the text encoder's positions)."
            )
        if max(tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) >= config.vocab_size:
            raise ValueError(
                f"ClipPromptEncoder: the tokenizer's special ids exceed the text encoder's "
                f"vocab_size {config.vocab_size}; are the tokenizer and text_encoder folders "
                "from the same model?"
            )
        self.config = config
        self.tokenizer = tokenizer
        self.skip_last_layers = int(skip_last_layers)
        self.model = ClipTextTransformer(config)
        self.params = jax.device_put(params)
        self._forward = jax.jit(
            lambda p, ids: self.model.apply({"params": p}, ids, self.skip_last_layers).hidden
        )

    @property
    def max_length(self) -> int:
        return self.tokenizer.max_length

    @property
    def context_dim(self) -> int:
        return self.config.hidden_size

    def encode_ids(self, ids: np.ndarray) -> np.ndarray:
        """Token ids [N, L] -> contexts [N, L, D] float32, in padded chunks."""
        ids = np.asarray(ids, np.int32)
        out = np.empty((len(ids), ids.shape[1], self.context_dim), np.float32)
        for start in range(0, len(ids), MAX_BATCH):
            chunk = ids[start : start + MAX_BATCH]  # [n, L]
            padded = np.full((padded_batch(len(chunk)), ids.shape[1]), self.tokenizer.pad_id)
            padded[: len(chunk)] = chunk
            hidden = self._forward(self.params, padded.astype(np.int32))  # [n', L, D]
            out[start : start + len(chunk)] = np.asarray(hidden)[: len(chunk)]
        return out

    def __call__(self, captions: Sequence[str]) -> np.ndarray:
        """Captions -> contexts [N, max_length, D] float32."""
        return self.encode_ids(self.tokenizer(list(captions)))
