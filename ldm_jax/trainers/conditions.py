"""Condition batches of stage 2: what the denoiser receives for each conditioning of the paper.

Training feeds exactly what `sampling/tasks.py` feeds at sampling time (kinds: see
`builders.CONDITION_KINDS`):

  none       nothing
  class      class labels [B] to the class embedder; dropped to its null class (guidance)
  adm        class labels [B] to the U-Net's label embedding (no dropout: the U-Net has no null
             class, so adm models sample unguided, as the reference's)
  text       token ids [B, L] of the caption (WordPiece) to the jointly trained BERT encoder;
             dropped to the empty caption
  layout     token ids [B, L] of the boxes and classes (`layout_tokens.encode` with
             `builders.layout_vocab`; computed on the host) to the same BERT (use_tokenizer
             False); dropped to the empty layout (every token padding)
  context    per-caption context [B, L, D] (`text_context`): the frozen MiniLM's last hidden
             state (cond stage "frozen_minilm"), a Stable Diffusion workdir's CLIP
             (`workdir/text_encoder.py`), or the fixed stand-in of the SD tiny variants
             (`generate.fixed_text_context`, L = 77); computed once per caption on the host,
             dropped to the empty caption's
  superres   the image degraded to [B, H/f, W/f, C] by `train.superres_degradation`, concatenated:
             "bicubic" (antialiased down-sampling by f; the default) or "bsr_light" (random
             blur, down-sampling method, noise and JPEG-like quantisation; `data/degradations.py`)
  inpaint    the latent (unscaled, as the reference's first-stage `encode`) of the image with a
             random large mask blacked out, and the mask at latent size in [-1, 1], concatenated
  semantic   the segmentation map one-hot [B, H, W, n] through the spatial rescaler
  hybrid_inpaint  SD inpainting: concat [mask in {0, 1}, scaled latent of the masked image] plus
             cross-attention to the fixed caption context (dropped to the empty caption's)

Concat conditions are never dropped (as the paper). Image conditions (superres, inpaint) are
made inside the jitted step from the batch's pixels; the inpainting masks and the bsr_light
degradations are drawn there from the step's key, so a resumed run draws the same ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ldm_jax.config import builders
from ldm_jax.config.model_config import has_model_section, model_config
from ldm_jax.config.validation import ConfigError
from ldm_jax.data import degradations, layout_tokens, masks
from ldm_jax.models.conditioning import drop_labels
from ldm_jax.sampling.generate import (
    TEXT_CONTEXT_LENGTH,
    fixed_text_context,
    inpainting_condition,
    sd_inpainting_condition,
)
from ldm_jax.workdir.text_encoder import prompt_encoder

CONTEXT_LENGTH = TEXT_CONTEXT_LENGTH
# Arrays the latent cache keeps per example for each kind, besides the latents.
HOST_KEYS = {
    "none": ("label",),
    "class": ("label",),
    "adm": ("label",),
    "text": ("tokens",),
    "layout": ("tokens",),  # layout token ids (`layout_token_arrays`), fed like text's
    "context": ("context",),
    "superres": ("image",),
    "inpaint": ("image",),
    "semantic": ("segmentation",),
    "hybrid_inpaint": ("image", "context"),
}

CONCAT_KINDS = ("superres", "inpaint", "semantic", "hybrid_inpaint")
# (batch of arrays, rng) -> (y for the denoiser, concat channels for "hybrid" or None)
TrainFn = Callable[[dict[str, jax.Array], jax.Array], tuple[Any, Any]]


@dataclasses.dataclass(frozen=True)
class Conditions:
    """How stage 2 conditions: the kind, the batch keys it reads, and the functions.

    Attributes:
      kind: one of `builders.CONDITION_KINDS`.
      keys: batch arrays the condition reads (besides "mean"/"logvar").
      train: (batch, rng) -> (y, concat), traced inside the train step, with condition dropout.
      null: the y of the unconditional branch with leading batch 1 (class, text, context), or
        None when the model samples unguided.
    """

    kind: str
    keys: tuple[str, ...]
    train: TrainFn
    null: Any


def drop_prob(config: ml_collections.ConfigDict) -> float:
    """The condition-dropout rate (`conditioning.drop_prob` in the quickstart schema)."""
    if has_model_section(config):
        return float(config.train.get("cond_drop_prob", 0.0))
    return float(config.conditioning.drop_prob)


def drop_rows(rng: jax.Array, y: jax.Array, null: jax.Array, p: float) -> jax.Array:
    """Replaces each row of y [B, ...] by `null` [1, ...] with probability p."""
    keep = jax.random.uniform(rng, y.shape[:1]) >= p  # [B]
    keep = keep.reshape((-1,) + (1,) * (y.ndim - 1))
    return jnp.where(keep, y, null.astype(y.dtype))


def superres_degradation(config: ml_collections.ConfigDict) -> str:
    """How the super-resolution condition is made (`train.superres_degradation`)."""
    return str(config.train.get("superres_degradation", "bicubic"))


def inpainting_inputs(
    ae: Any, ae_params: Any, images: jax.Array, rng: jax.Array, f: int
) -> jax.Array:
    """The paper's inpainting condition under a random large mask (`generate.inpainting_condition`,
    what `sampling/tasks.py` feeds)."""
    mask = masks.large_masks(rng, images.shape[0], images.shape[1])  # [B, H, W, 1]
    return inpainting_condition(ae, ae_params, images, mask, f)


def sd_inpainting_inputs(
    ae: Any, ae_params: Any, images: jax.Array, rng: jax.Array, f: int, scale_factor: float
) -> jax.Array:
    """SD inpainting's concat channels under a random large mask
    (`generate.sd_inpainting_condition`)."""
    mask = masks.large_masks(rng, images.shape[0], images.shape[1])  # [B, H, W, 1]
    return sd_inpainting_condition(ae, ae_params, images, mask, f, scale_factor)


def context_dim(config: ml_collections.ConfigDict) -> int:
    """The U-Net's cross-attention width."""
    return int(model_config(config)["unet"]["context_dim"])


def text_context(
    config: ml_collections.ConfigDict, captions: Sequence[str], workdir: str = ""
) -> np.ndarray:
    """Context tokens [N, L, D] of captions for the "context" kind: the workdir's frozen text
    encoder (`workdir.text_encoder.prompt_encoder`: MiniLM, or the CLIP of a Stable Diffusion
    workdir read from `workdir`), else (`train.fixed_text_context`, or a CLIP config without
    weights) the fixed per-caption stand-in.

    Raises:
      ConfigError: the U-Net's context_dim differs from the frozen encoder's width.
    """
    encoder = None
    if not config.get("train", {}).get("fixed_text_context", False):
        encoder = prompt_encoder(workdir, model_config(config)["cond_stage"])
    if encoder is None:
        return fixed_text_context(captions, CONTEXT_LENGTH, context_dim(config))
    context = encoder(captions)  # [N, L, D]
    if context.shape[-1] != context_dim(config):
        raise ConfigError(
            f"config.model.unet.context_dim={context_dim(config)}, but the frozen text encoder "
            f"gives {context.shape[-1]}-wide contexts: set "
            f"--config.model.unet.context_dim={context.shape[-1]}."
        )
    return context


def layout_token_arrays(
    config: ml_collections.ConfigDict, split: dict[str, np.ndarray]
) -> np.ndarray:
    """Layout token ids int32 [N, L] of a split's "classes" [N, M], "boxes" [N, M, 4] and
    "num_objects" [N] (`layout_tokens.encode`, the full canvas as crop window)."""
    missing = [k for k in ("classes", "boxes", "num_objects") if split.get(k) is None]
    if missing:
        raise ConfigError(
            f"config.data.name: dataset {config.data.name!r} has no {missing[0]!r} feature, "
            "which this layout model needs; use a dataset with boxes (fashion_mnist_layout)."
        )
    vocab = builders.layout_vocab(config)
    return layout_tokens.encode(split["classes"], split["boxes"], split["num_objects"], vocab)


def make_conditions(
    config: ml_collections.ConfigDict,
    ae_params: Any = None,
    scale_factor: float = 1.0,
    tokenizer: Any = None,
    workdir: str = "",
) -> Conditions:
    """The `Conditions` of a config (ae_params: the frozen first stage, for inpainting;
    tokenizer: the text models' `WordPieceTokenizer`; workdir: where a Stable Diffusion
    model's CLIP folders are)."""
    kind = builders.condition_kind(config)
    keys = HOST_KEYS[kind]
    p = drop_prob(config)
    f = builders.downsampling_factor(config)
    ae = builders.build_autoencoder(config)
    cond_stage = builders.build_denoiser(config).cond_stage_model

    if kind == "class":
        null_class = cond_stage.num_classes if cond_stage.add_null_class else None
        null = None if null_class is None else np.full((1,), null_class, np.int32)

        def train(batch, rng):
            if null_class is None:
                return batch["label"], None
            return drop_labels(rng, batch["label"], p, null_class), None

        return Conditions(kind, keys, train, null)
    if kind == "layout":
        null = builders.null_layout(builders.layout_vocab(config))  # [1, L]
        return Conditions(kind, keys, lambda b, r: (drop_rows(r, b["tokens"], null, p), None), null)
    if kind in ("text", "context"):
        if kind == "text":
            if tokenizer is None:
                raise ValueError("make_conditions: a text model needs its tokenizer.")
            null = tokenizer([""])  # [1, L]: the empty caption
            field = "tokens"
        else:
            null = text_context(config, [""], workdir)  # [1, L, D]: the empty caption
            field = "context"
        return Conditions(kind, keys, lambda b, r: (drop_rows(r, b[field], null, p), None), null)
    if kind == "hybrid_inpaint":
        null_ctx = text_context(config, [""], workdir)

        def train_hybrid(batch, rng):
            mask_rng, drop_rng = jax.random.split(rng)
            concat = sd_inpainting_inputs(ae, ae_params, batch["image"], mask_rng, f, scale_factor)
            return drop_rows(drop_rng, batch["context"], null_ctx, p), concat

        return Conditions(kind, keys, train_hybrid, {"context": null_ctx})
    return Conditions(kind, keys, _unguided_train_fn(config, kind, ae, ae_params, f), None)


def _unguided_train_fn(
    config: ml_collections.ConfigDict, kind: str, ae: Any, ae_params: Any, f: int
) -> TrainFn:
    """The kinds without condition dropout: none, adm and the concat ones."""
    if kind == "none":
        return lambda batch, rng: (None, None)
    if kind == "adm":
        return lambda batch, rng: (batch["label"], None)
    if kind == "superres":
        method = superres_degradation(config)
        return lambda batch, rng: (degradations.degrade(batch["image"], f, method, rng), None)
    if kind == "inpaint":
        return lambda batch, rng: (inpainting_inputs(ae, ae_params, batch["image"], rng, f), None)
    if kind == "semantic":
        n = int(model_config(config)["cond_stage"]["in_channels"])

        def semantic(batch, rng):
            seg = jnp.clip(batch["segmentation"], 0, n - 1)
            return jax.nn.one_hot(seg, n, dtype=jnp.float32), None  # [B, H, W, n]

        return semantic
    raise ValueError(f"No condition recipe for kind {kind!r}.")


def sample_inputs(
    conditions: Conditions, batch: dict[str, np.ndarray], num: int
) -> tuple[Any, Any]:
    """(cond, uncond) for an in-training sample grid, from the first `num` rows of a batch: the
    conditions as trained, without dropout (the inpainting masks from a fixed key)."""
    rows = {k: jnp.asarray(batch[k][:num]) for k in conditions.keys}
    kind = conditions.kind
    if kind == "none":
        return None, None
    if kind in CONCAT_KINDS:
        y, concat = jax.jit(conditions.train)(rows, jax.random.PRNGKey(0))
        if kind != "hybrid_inpaint":
            return y, None
        null = {"context": jnp.asarray(conditions.null["context"]), "concat": concat}
        return {"context": rows["context"], "concat": concat}, null
    y = rows[conditions.keys[0]]  # labels, token ids or context
    return y, None if conditions.null is None else jnp.asarray(conditions.null)
