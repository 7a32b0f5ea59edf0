"""Completes a paper or Stable Diffusion model config into a trainable experiment config.

Every file under `configs/paper/` and `configs/sd/` ends with `return experiment.finalize(c, arg)`:
the file states the model (`c.model`), the diffusion settings (`c.diffusion`) and the paper's
dataset (`c.data`) and what differs from the defaults; `finalize` adds every other section a
run needs (stage, seed, data fields, autoencoder_train, train, mesh, sample) with the
quickstart's training defaults (`config/defaults.py`), and `arg="tiny"` turns the config into a
seconds-long variant for tests: the same conditioning kind and first-stage kind (and its
downsampling factor f up to 8; the identity first stage, f = 1, stays pixel space and skips
stage 1) at a few thousand parameters, on `synthetic_shapes` data, a few
steps of batch 8. A Stable Diffusion tiny variant trains on fixed per-caption context
embeddings in place of the frozen CLIP/OpenCLIP text encoder, whose weights an SD preset does
not hold (see `trainers/conditions.py`; imported SD workdirs train with their own encoder through
`configs/finetune/`).
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections

from ldm_jax.config import defaults
from ldm_jax.config.options import default_mesh_config
from ldm_jax.models import factory
from ldm_jax.models.specs import downsampling_factor, latent_channels

TINY = "tiny"
TINY_IMAGE_SIZE = 32
TINY_CLASSES = 4
TINY_CONTEXT_DIM = 32
FROZEN_TEXT_ENCODERS = factory.EXTERNAL_COND_STAGES


def _num_classes(model: ml_collections.ConfigDict) -> int:
    """Label classes the model conditions on (0 when it takes no class labels)."""
    cond = model.get("cond_stage") or {}
    if cond.get("kind") == "class":
        return cond["n_classes"] - int(bool(cond.get("add_null_class", False)))
    if model.get("conditioning_key") == "adm":
        return int(model.unet.get("num_classes") or 0)
    return 0


def _fill(section: ml_collections.ConfigDict, values: dict[str, Any]) -> None:
    for name, value in values.items():
        if name not in section:
            section[name] = value


def _complete(c: ml_collections.ConfigDict) -> None:
    """Adds every missing section and field (see the module docstring)."""
    has_unet = c.model.get("unet") is not None
    if "stage" not in c:
        c.stage = "ldm" if has_unet else "autoencoder"
    if "seed" not in c:
        c.seed = 0
    if "data" not in c:
        c.data = ml_collections.ConfigDict()
    fs = c.model.first_stage
    side = fs.get("resolution") or 256
    if has_unet and "resolution" not in fs:  # identity: the image side from the U-Net's
        side = c.model.unet.image_size * downsampling_factor(fs)
    _fill(
        c.data,
        dict(
            name="synthetic_shapes",
            data_dir="",
            path="",
            train_split="train",
            image_size=side,
            channels=fs.get("in_channels", 3),
            num_classes=_num_classes(c.model),
            crop="center",
        ),
    )
    for name, values in (
        ("autoencoder_train", defaults.AUTOENCODER_TRAIN),
        ("train", defaults.TRAIN),
        ("sample", defaults.SAMPLE),
    ):
        if name not in c:
            c[name] = defaults.section(values)
        else:
            _fill(c[name], values)
    if "mesh" not in c:
        c.mesh = default_mesh_config()
    if "diffusion" in c:
        c.diffusion = defaults.with_defaults(ml_collections.ConfigDict({"diffusion": c.diffusion}))[
            "diffusion"
        ]


def finalize(c: ml_collections.ConfigDict, arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns `c` completed into an experiment config (`arg`: None or "tiny").

    Raises:
      ValueError: for an argument other than None, "" or "tiny".
    """
    if arg not in (None, "", TINY):
        raise ValueError(f"Unknown config argument {arg!r}; use 'tiny' or nothing.")
    if "model" not in c or c.model is None:
        return c
    _complete(c)
    if arg == TINY:
        _make_tiny(c)
    return c


def _tiny_first_stage(fs: ml_collections.ConfigDict, image_size: int) -> int:
    """Shrinks the first stage in place (3 image channels), keeping its kind and f (up to 8);
    returns f."""
    if fs.kind == "identity":
        fs.in_channels = 3
        return 1
    levels = min(len(fs.ch_mult), 4)  # f <= 8
    embed = fs.embed_dim if fs.embed_dim <= 8 else 4
    fs.update(
        ch=16,
        ch_mult=(1,) + (2,) * (levels - 1),
        num_res_blocks=1,
        attn_resolutions=(),
        attn_type="none",  # no mid-block attention: one tiny first stage per (kind, f)
        resolution=image_size,
        embed_dim=embed,
        z_channels=embed,
        num_groups=8,
        in_channels=3,
        out_ch=3,
    )
    if fs.kind == "vq":
        fs.n_embed = 64
    return downsampling_factor(fs)


def _tiny_cond_stage(c: ml_collections.ConfigDict, f: int) -> int:
    """Shrinks tau_theta in place; returns the extra concat channels it feeds the U-Net."""
    model, cond = c.model, c.model.get("cond_stage")
    kind = cond.kind if cond is not None else "none"
    key = model.get("conditioning_key")
    embed = latent_channels(model.first_stage)
    if kind == "class":
        null = bool(cond.get("add_null_class", False))
        cond.update(n_classes=TINY_CLASSES + int(null), embed_dim=TINY_CONTEXT_DIM)
    elif kind == "bert":
        cond.update(n_embed=TINY_CONTEXT_DIM, n_layer=1, vocab_size=512, max_seq_len=16)
    elif kind in FROZEN_TEXT_ENCODERS:
        c.train.fixed_text_context = True
    elif kind == "spatial_rescaler":
        cond.update(in_channels=8, n_stages=int(math.log2(f)), multiplier=0.5)
        return cond.get("out_channels") or cond.in_channels
    if kind == "identity":
        return c.data.channels  # the low-resolution image
    if kind == "first_stage" or key == "hybrid":
        return embed + 1  # the masked image's latent and the mask
    return 0


def _has_frozen_width(model: ml_collections.ConfigDict) -> bool:
    """True when tau_theta is a pretrained frozen encoder whose context width cannot shrink
    (the MiniLM's 384); the frozen CLIPs of the SD configs are stood in for by fixed contexts of
    any width."""
    cond = model.get("cond_stage")
    return cond is not None and cond.kind in factory.FROZEN_TEXT_ENCODERS


def _make_tiny(c: ml_collections.ConfigDict) -> None:
    """The seconds-long variant (module docstring), in place."""
    size = TINY_IMAGE_SIZE
    c.data.update(
        name="synthetic_shapes",
        data_dir="",
        path="",
        train_split="train",
        image_size=size,
        channels=3,
        num_classes=TINY_CLASSES if _num_classes(c.model) else c.data.num_classes,
    )
    f = _tiny_first_stage(c.model.first_stage, size)
    embed = latent_channels(c.model.first_stage)
    unet = c.model.get("unet")
    if unet is not None:
        extra = _tiny_cond_stage(c, f)
        unet.update(
            image_size=size // f,
            in_channels=embed + extra,
            out_channels=embed,
            model_channels=32,
            channel_mult=(1, 2),
            num_res_blocks=1,
            attention_resolutions=(),  # attention (and cross-attention) in the middle block only
            num_heads=2,
            num_head_channels=-1,
            transformer_depth=1,
        )
        if unet.get("context_dim") is not None and not _has_frozen_width(c.model):
            unet.context_dim = TINY_CONTEXT_DIM
        if unet.get("num_classes") is not None:
            unet.num_classes = TINY_CLASSES
        c.data.num_classes = _num_classes(c.model) or TINY_CLASSES
        # Stage 1 trains too, except for the identity first stage, which has nothing to train.
        c.stage = "ldm" if c.model.first_stage.kind == "identity" else "both"
    if "latent" in c:
        c.latent.update(image_size=size // f, channels=embed)
    c.autoencoder_train.update(
        steps=2, batch_size=8, warmup_steps=1, log_every=1, checkpoint_every=2, sample_every=0
    )
    loss = c.autoencoder_train.get("loss")
    if loss is not None and loss.get("disc_weight", 0.0) > 0:
        # The discriminator joins at the second step, with layers that fit the tiny images.
        loss.update(disc_start=1, disc_num_layers=2, disc_ndf=16)
    # Three steps: the warm-up's first step has learning rate 0 and the U-Net's output layer is
    # zero at init, so the loss depends on the network from the third step on.
    c.train.update(
        steps=3, batch_size=8, warmup_steps=1, log_every=1, checkpoint_every=3, sample_every=0
    )
    # Tiny runs end without a grid (the sample CLI samples them), except Stable Diffusion's,
    # which end with a grid conditioned on the first batch's captions.
    c.train.final_samples = c.train.fixed_text_context
    c.sample.update(steps=2, per_class=1)
