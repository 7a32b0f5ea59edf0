"""Turns a validated config into models and a noise schedule (the config/model boundary).

Both config styles (the quickstart's sections and the paper schema `config.model`) go through
`model_config.model_config` and are built by `models.factory`, so a trained workdir, a paper config
and an imported checkpoint describe their networks in one schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ldm_jax import diffusion
from ldm_jax.config.model_config import has_model_section, model_config
from ldm_jax.data import datasets, layout_tokens
from ldm_jax.data.layout_tokens import LayoutVocab
from ldm_jax.models import factory, specs
from ldm_jax.models.latent_denoiser import LatentDenoiser

# What a model is conditioned on, as the trainers feed it (see `condition_kind`).
CONDITION_KINDS = (
    "none",  # unconditional
    "class",  # crossattn to a class embedding (ClassEmbedder)
    "adm",  # class labels added to the U-Net's time embedding
    "text",  # crossattn to the jointly trained BERT text encoder (token ids)
    "layout",  # crossattn to the same BERT over layout tokens (boxes and classes; see below)
    "context",  # crossattn to per-caption contexts (frozen MiniLM; SD tiny variants' fixed ones)
    "superres",  # concat: the low-resolution image
    "inpaint",  # concat: the masked image's latent and the mask
    "semantic",  # concat: a one-hot segmentation map through the spatial rescaler
    "hybrid_inpaint",  # hybrid: concat as SD inpainting + crossattn to fixed text context
)


def has_layouts(config: ml_collections.ConfigDict) -> bool:
    """Whether the config's dataset has boxes with object classes (`num_object_classes`)."""
    data = config.get("data")
    name = data.get("name") if data is not None else None
    return bool(name) and datasets.num_object_classes(name) is not None


def is_layout_model(config: ml_collections.ConfigDict) -> bool:
    """A BERT fed token ids (`use_tokenizer=False`) by cross-attention, on a dataset with boxes:
    the paper's layout model (see `condition_kind`)."""
    model = model_config(config)
    cond = model.get("cond_stage") or {}
    return (
        model.get("conditioning_key") == "crossattn"
        and cond.get("kind") == "bert"
        and not cond.get("use_tokenizer", True)
        and has_layouts(config)
    )


def condition_kind(config: ml_collections.ConfigDict) -> str:
    """One of `CONDITION_KINDS`, from the conditioning key and the cond stage's kind.

    A BERT fed ids directly (`cond_stage.use_tokenizer=False`, the paper's layout model) is
    "layout" when the dataset has boxes (`has_layouts`), else "text" (trained on captions, the
    stand-in for datasets without boxes).
    """
    model = model_config(config)
    key = model.get("conditioning_key")
    kind = (model.get("cond_stage") or {"kind": "none"})["kind"]
    if key is None:
        return "none"
    if key == "adm":
        return "adm"
    if is_layout_model(config):
        return "layout"
    text = {"bert": "text", "frozen_clip": "context", "frozen_openclip": "context"}
    text["frozen_minilm"] = "context"  # the frozen MiniLM's context of each caption
    if key == "crossattn" and kind == "class":
        return "class"
    if key == "crossattn" and kind in text:
        return text[kind]
    if key == "concat":
        table = {"identity": "superres", "none": "superres", "first_stage": "inpaint"}
        table["spatial_rescaler"] = "semantic"
        if kind in table:
            return table[kind]
    if key == "hybrid" and kind in ("frozen_clip", "frozen_openclip"):
        return "hybrid_inpaint"
    raise ValueError(
        f"config.model: no training recipe for conditioning_key={key!r} with cond_stage kind "
        f"{kind!r}."
    )


def layout_vocab(config: ml_collections.ConfigDict) -> LayoutVocab:
    """The layout tokens of a "layout" model: the dataset's object classes, the BERT's
    `vocab_size`, and `max_seq_len` = 3 * max_objects, plus 2 when the crop window is encoded
    (92 = 3 * 30 + 2 for the paper's model).

    Raises:
      ValueError: the dataset has no boxes, max_seq_len is not 3k or 3k + 2 (k >= 1), or
        vocab_size leaves no room for the classes, a 2 x 2 grid and padding.
    """
    cond = model_config(config)["cond_stage"]
    num_classes = datasets.num_object_classes(config.data.name) if has_layouts(config) else None
    if num_classes is None:
        raise ValueError(
            f"config.data.name: dataset {config.data.name!r} has no boxes; a layout model needs "
            "one that has (e.g. fashion_mnist_layout)."
        )
    length = int(cond.get("max_seq_len", 77))
    if length < 3 or length % 3 == 1:
        raise ValueError(
            f"config.model.cond_stage.max_seq_len={length}: a layout is 3 tokens per object, "
            "plus 2 for the crop window; use 3 * max_objects or 3 * max_objects + 2."
        )
    size = int(cond.get("vocab_size", 30522))
    try:
        return LayoutVocab(num_classes, length // 3, vocab_size=size, encode_crop=length % 3 == 2)
    except ValueError as e:
        raise ValueError(f"config.model.cond_stage.vocab_size={size}: {e}") from None


def null_layout(vocab: LayoutVocab) -> np.ndarray:
    """The empty layout's token ids int32 [1, L] (every object slot padding): the
    unconditional branch of classifier-free guidance, in training and sampling."""
    classes = np.zeros((1, vocab.max_objects), np.int32)
    boxes = np.zeros((1, vocab.max_objects, 4), np.float32)
    return layout_tokens.encode(classes, boxes, np.zeros((1,), np.int32), vocab)


def first_stage_kind(config: ml_collections.ConfigDict) -> str:
    """The first stage's kind: "kl" (always for the quickstart schema), "vq" or "identity"."""
    return model_config(config)["first_stage"]["kind"]


def downsampling_factor(config: ml_collections.ConfigDict) -> int:
    """f of the first stage (`models.specs.downsampling_factor`: 2 ** (len(ch_mult) - 1) for
    an autoencoder, 1 for the identity)."""
    return specs.downsampling_factor(model_config(config)["first_stage"])


def has_deterministic_latents(config: ml_collections.ConfigDict) -> bool:
    """Whether the first stage's latents are used as they are (VQ, identity: only their
    "mean" is cached) rather than sampled from a KL posterior every step."""
    return specs.has_deterministic_latents(model_config(config)["first_stage"])


def build_autoencoder(config: ml_collections.ConfigDict) -> factory.FirstStage:
    """The first stage (KL for the quickstart; KL, VQ or identity for `config.model`)."""
    return factory.build_first_stage(model_config(config)["first_stage"])


def latent_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    """(h, w, c) of the latent z for one image (the U-Net's `image_size`, the latent channels:
    `embed_dim`, or the image channels for the identity first stage)."""
    model = model_config(config)
    side = model["unet"]["image_size"]
    return side, side, specs.latent_channels(model["first_stage"])


def build_denoiser(config: ml_collections.ConfigDict) -> LatentDenoiser:
    """U-Net plus condition encoder (tau_theta) and its conditioning key."""
    return factory.build_latent_denoiser(model_config(config))


def denoiser_example_inputs(config: ml_collections.ConfigDict) -> tuple[Any, ...]:
    """(z, t, y) with batch 1 that create every parameter of `build_denoiser(config)`.

    y is what the cond stage takes (labels [1], token ids [1, L], a map [1, H, W, C]) or, without
    one, what the U-Net receives (concat channels [1, h, w, c'] or context [1, 1, D]); None for
    unconditional models. "hybrid" models get (z, t, context, True, concat): the positional
    `deterministic` and `concat` arguments of `LatentDenoiser.__call__`.
    """
    model = model_config(config)
    unet, cond = model["unet"], model.get("cond_stage") or {"kind": "none"}
    key = model.get("conditioning_key")
    h, w, c = latent_shape(config)
    z, t = jnp.zeros((1, h, w, c), jnp.float32), jnp.zeros((1,), jnp.int32)
    kind = cond["kind"]
    if key is None:
        return z, t, None
    if kind in ("class", "bert"):
        (y,) = factory.example_inputs("cond_stage", cond)
        return z, t, jnp.zeros(y.shape, y.dtype)
    extra = unet["in_channels"] - c
    if kind == "spatial_rescaler":
        scale = cond.get("multiplier", 0.5) ** cond.get("n_stages", 1)
        side = round(h / scale)
        return z, t, jnp.zeros((1, side, side, cond["in_channels"]), jnp.float32)
    if key == "hybrid":
        context = jnp.zeros((1, 1, unet["context_dim"]), jnp.float32)
        return z, t, context, True, jnp.zeros((1, h, w, extra), jnp.float32)
    if key == "concat" and extra > 0:
        return z, t, jnp.zeros((1, h, w, extra), jnp.float32)
    if key == "adm":
        return z, t, jnp.zeros((1,), jnp.int32)
    return z, t, jnp.zeros((1, 1, unet["context_dim"]), jnp.float32)


def abstract_denoiser_params(config: ml_collections.ConfigDict) -> Any:
    """The denoiser's parameter tree as `jax.ShapeDtypeStruct`s (nothing is allocated)."""
    denoiser = build_denoiser(config)
    inputs = denoiser_example_inputs(config)
    init = lambda: denoiser.init(jax.random.PRNGKey(0), *inputs)
    return jax.eval_shape(lambda: nn.unbox(init()))["params"]


def abstract_autoencoder_params(config: ml_collections.ConfigDict) -> Any:
    """The first stage's parameter tree as `jax.ShapeDtypeStruct`s."""
    ae = build_autoencoder(config)
    fs = model_config(config)["first_stage"]
    return factory.abstract_params(ae, factory.example_inputs("first_stage", fs))


def build_schedule(config: ml_collections.ConfigDict) -> diffusion.NoiseSchedule:
    """The training noise schedule from `config.diffusion`."""
    d = config.diffusion
    return diffusion.NoiseSchedule.create(
        d.schedule,
        num_timesteps=d.num_timesteps,
        beta_start=d.beta_start,
        beta_end=d.beta_end,
        rescale_zero_snr=d.get("rescale_zero_snr", False),
    )


def build_data_source(config: ml_collections.ConfigDict, split: str | None = None) -> Sequence:
    """The config's random-access source of `split` (default `data.train_split`).

    Quickstart-schema configs call `datasets.get_data_source` as they always have; experiment
    configs pass the data section's path, image size, channels, classes and the seed (used by
    generated datasets such as synthetic_shapes).
    """
    d = config.data
    split = d.train_split if split is None else split
    if not has_model_section(config):
        return datasets.get_data_source(d.name, split, d.data_dir or None)
    return datasets.get_data_source(
        d.name,
        split,
        d.data_dir or None,
        path=d.get("path", ""),
        image_size=d.image_size,
        channels=d.channels,
        num_classes=d.get("num_classes") or None,
        seed=config.seed,
    )
