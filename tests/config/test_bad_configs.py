"""Distinct bad configs across the quickstart and the paper configs: each fails validation before
anything compiles, with a one-line message that starts with the field it names.

Each case edits a shipped config as plain dicts (a config file or a workdir's config.json may hold
any type; `ConfigDict` itself would refuse some of these edits), then validates it on a stated
device count (one device, one process unless the case is about devices).
"""

from __future__ import annotations

import os
import re
from typing import Any, NamedTuple

import ml_collections
import pytest

from ldm_jax.config.defaults import with_defaults
from ldm_jax.config.files import load_config_file
from ldm_jax.config.validation import ConfigError, validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DELETE = object()  # an edit that removes the key


class Case(NamedTuple):
    """A bad config: a shipped config (file, arg), edits {dotted path: value}, the field the
    error must name, and the devices/processes of the run."""

    base: tuple[str, str | None]
    edits: dict[str, Any]
    field: str
    devices: int = 1
    processes: int = 1


QS = ("quickstart.py", None)
QS_TINY = ("quickstart.py", "tiny")
CIN = ("paper/cin256_v2.py", "tiny")  # class-conditional (crossattn), VQ f=4 tiny
BSR = ("paper/bsr_sr.py", "tiny")  # super-resolution (concat)
TXT = ("paper/txt2img_1p4b.py", "tiny")  # BERT text-to-image
KL8 = ("paper/kl_f8.py", "tiny")  # first stage only, paper loss
VQ4 = ("paper/vq_f4.py", "tiny")
CHURCH = ("paper/lsun_churches_ldm_kl8.py", "tiny")  # unconditional, KL f=8
CELEBA = ("paper/celebahq_ldm_vq4.py", None)  # unconditional, full size
SEMANTIC = ("paper/semantic_synthesis256.py", "tiny")
SD = ("sd/sd_v1.py", "tiny")
INPAINT = ("paper/inpainting_big.py", "tiny")

CASES = {
    # Types (`int` is not `bool`, numbers are not strings, tuples hold their item type).
    "qs-batch-size-string": Case(QS, {"train.batch_size": "64"}, "train.batch_size"),
    "qs-steps-float": Case(QS, {"train.steps": 10.0}, "train.steps"),
    "qs-image-size-bool": Case(QS, {"data.image_size": True}, "data.image_size"),
    "qs-learning-rate-string": Case(QS, {"train.learning_rate": "1e-3"}, "train.learning_rate"),
    "qs-eta-none": Case(QS, {"sample.eta": None}, "sample.eta"),
    "qs-scale-by-std-int": Case(QS, {"diffusion.scale_by_std": 1}, "diffusion.scale_by_std"),
    "qs-ch-mult-item-string": Case(QS, {"autoencoder.ch_mult": [1, "2"]}, "autoencoder.ch_mult"),
    "qs-axis-rules-not-pairs": Case(
        QS, {"mesh.logical_axis_rules": ["batch"]}, "mesh.logical_axis_rules"
    ),
    "qs-stage-int": Case(QS, {"stage": 5}, "stage"),
    "qs-data-not-a-section": Case(QS, {"data": "fashion_mnist"}, "data"),
    "cin-attention-resolutions-string": Case(
        CIN, {"model.unet.attention_resolutions": "4,2"}, "model.unet.attention_resolutions"
    ),
    "sd-linear-transformer-string": Case(
        SD, {"model.unet.use_linear_in_transformer": "yes"}, "model.unet.use_linear_in_transformer"
    ),
    # Choices.
    "qs-compute-dtype": Case(QS, {"train.compute_dtype": "float16"}, "train.compute_dtype"),
    "cin-conditioning-key": Case(
        CIN, {"model.conditioning_key": "cross"}, "model.conditioning_key"
    ),
    "church-first-stage-kind": Case(
        CHURCH, {"model.first_stage.kind": "kll"}, "model.first_stage.kind"
    ),
    "bsr-parameterization": Case(
        BSR, {"diffusion.parameterization": "score"}, "diffusion.parameterization"
    ),
    # Ranges.
    "qs-warmup-negative": Case(QS, {"train.warmup_steps": -1}, "train.warmup_steps"),
    "qs-weight-decay-negative": Case(
        QS, {"autoencoder_train.weight_decay": -0.1}, "autoencoder_train.weight_decay"
    ),
    "qs-ema-decay-one": Case(QS, {"train.ema_decay": 1.0}, "train.ema_decay"),
    "qs-min-lr-ratio": Case(QS, {"train.min_lr_ratio": 1.5}, "train.min_lr_ratio"),
    "qs-guidance-negative": Case(QS, {"sample.guidance_scale": -1.0}, "sample.guidance_scale"),
    "qs-timesteps-zero": Case(QS, {"diffusion.num_timesteps": 0}, "diffusion.num_timesteps"),
    "qs-beta-end-above-one": Case(QS, {"diffusion.beta_end": 1.5}, "diffusion.beta_end"),
    "qs-seed-negative": Case(QS, {"seed": -5}, "seed"),
    "qs-learning-rate-nan": Case(QS, {"train.learning_rate": float("nan")}, "train.learning_rate"),
    "qs-num-classes-negative": Case(QS, {"data.num_classes": -1}, "data.num_classes"),
    "qs-mesh-tensor-zero": Case(QS, {"mesh.tensor": 0}, "mesh.tensor"),
    "bsr-grad-clip-negative": Case(BSR, {"train.grad_clip": -1.0}, "train.grad_clip"),
    "kl8-kl-weight-negative": Case(
        KL8, {"autoencoder_train.kl_weight": -1e-6}, "autoencoder_train.kl_weight"
    ),
    "church-dropout-one": Case(
        CHURCH, {"model.first_stage.dropout": 1.0}, "model.first_stage.dropout"
    ),
    "cin-transformer-depth-zero": Case(
        CIN, {"model.unet.transformer_depth": 0}, "model.unet.transformer_depth"
    ),
    "txt-max-seq-len-zero": Case(
        TXT, {"model.cond_stage.max_seq_len": 0}, "model.cond_stage.max_seq_len"
    ),
    "vq4-codebook-empty": Case(VQ4, {"model.first_stage.n_embed": 0}, "model.first_stage.n_embed"),
    "qs-nonfinite-policy": Case(QS, {"train.on_nonfinite": "ignore"}, "train.on_nonfinite"),
    # Unknown keys (with the closest valid name) and missing fields.
    "qs-unknown-train-key": Case(QS, {"train.batchsize": 64}, "train.batchsize"),
    "qs-unknown-section": Case(QS, {"sampel": {"steps": 3}}, "sampel"),
    "qs-unknown-autoencoder-key": Case(QS, {"autoencoder.chanels": 3}, "autoencoder.chanels"),
    "qs-derived-autoencoder-key": Case(
        QS, {"autoencoder.in_channels": 3}, "autoencoder.in_channels"
    ),
    "qs-unknown-diffusion-key": Case(QS, {"diffusion.schedul": "linear"}, "diffusion.schedul"),
    "cin-unknown-unet-key": Case(CIN, {"model.unet.num_head": 2}, "model.unet"),
    "qs-missing-batch-size": Case(QS, {"train.batch_size": DELETE}, "train.batch_size"),
    "qs-missing-channels": Case(QS, {"data.channels": DELETE}, "data.channels"),
    "qs-missing-train": Case(QS, {"train": DELETE}, "train"),
    # Image size against the downsampling factor f and the U-Net's levels.
    "qs-image-size-vs-f": Case(QS, {"data.image_size": 30}, "data.image_size"),
    "celeba-image-size-vs-f": Case(CELEBA, {"data.image_size": 254}, "data.image_size"),
    "qs-unet-levels-vs-latent": Case(
        QS, {"unet.channel_mult": [1, 2, 2, 2, 2]}, "unet.channel_mult"
    ),
    "cin-unet-image-size": Case(CIN, {"model.unet.image_size": 4}, "model.unet.image_size"),
    # Widths against GroupNorm groups and attention heads.
    "qs-autoencoder-groups": Case(QS, {"autoencoder.num_groups": 24}, "autoencoder.ch"),
    "cin-unet-groups": Case(CIN, {"model.unet.num_groups": 24}, "model.unet.model_channels"),
    "qs-head-channels": Case(QS, {"unet.num_head_channels": 24}, "unet.num_head_channels"),
    "cin-heads": Case(CIN, {"model.unet.num_heads": 3}, "model.unet.num_heads"),
    "church-both-head-settings": Case(
        CHURCH, {"model.unet.num_head_channels": 16}, "model.unet.num_heads"
    ),
    "cin-context-vs-class-width": Case(
        CIN, {"model.unet.context_dim": 64}, "model.unet.context_dim"
    ),
    "cin-out-channels-vs-latent": Case(
        CIN, {"model.unet.out_channels": 5}, "model.unet.out_channels"
    ),
    # The mesh against the devices, the batch against devices x processes x micro-batches.
    "qs-mesh-not-dividing-devices": Case(QS_TINY, {"mesh.data": 3}, "mesh", devices=8),
    "qs-mesh-too-many-devices": Case(QS_TINY, {"mesh.data": 16}, "mesh", devices=8),
    "qs-batch-vs-devices": Case(QS_TINY, {"train.batch_size": 12}, "train.batch_size", devices=8),
    "qs-batch-vs-processes": Case(
        QS_TINY, {"train.batch_size": 24}, "autoencoder_train.batch_size", devices=8, processes=3
    ),
    "cin-batch-vs-accumulation": Case(
        CIN, {"train.grad_accum_steps": 2}, "train.batch_size", devices=8
    ),
    "kl8-autoencoder-batch-vs-fsdp": Case(
        KL8,
        {"mesh.data": 1, "mesh.fsdp": -1, "autoencoder_train.batch_size": 4},
        "autoencoder_train.batch_size",
        devices=8,
    ),
    # Conditioning against the data.
    "qs-class-without-classes": Case(QS, {"data.num_classes": 0}, "data.num_classes"),
    "qs-class-on-unlabelled-data": Case(QS, {"data.name": "noto_emoji"}, "data.name"),
    "qs-fewer-classes-than-data": Case(QS, {"data.num_classes": 5}, "data.num_classes"),
    "cin-class-table-too-small": Case(
        CIN, {"model.cond_stage.n_classes": 3}, "model.cond_stage.n_classes"
    ),
    "txt-text-without-captions": Case(TXT, {"data.name": "fashion_mnist"}, "data.name"),
    "semantic-without-maps": Case(SEMANTIC, {"data.name": "noto_emoji"}, "data.name"),
    "inpaint-unknown-condition": Case(
        INPAINT, {"model.cond_stage.kind": "class", "model.cond_stage.embed_dim": 8}, "model"
    ),
}


def _load(base: tuple[str, str | None]) -> dict[str, Any]:
    config = load_config_file(os.path.join(ROOT, "configs", base[0]), base[1])
    return with_defaults(config).to_dict()


def _edit(config: dict[str, Any], edits: dict[str, Any]) -> ml_collections.ConfigDict:
    for path, value in edits.items():
        *parents, name = path.split(".")
        node = config
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[name]
        else:
            node[name] = value
    return ml_collections.ConfigDict(config)


def test_enough_distinct_bad_configs():
    assert len(CASES) >= 40
    assert len({(c.base, repr(sorted(c.edits.items(), key=str))) for c in CASES.values()}) == len(
        CASES
    )
    paper = {c.base[0] for c in CASES.values() if c.base[0] != "quickstart.py"}
    assert len(paper) >= 8


@pytest.mark.parametrize("base", sorted({c.base for c in CASES.values()}, key=str), ids=str)
def test_unedited_bases_are_valid(base):
    """So each case fails because of its edit, not of its base."""
    validate_config(ml_collections.ConfigDict(_load(base)), 8 if base[1] == "tiny" else 1, 1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_config_names_the_field(name):
    case = CASES[name]
    config = _edit(_load(case.base), case.edits)
    with pytest.raises(ConfigError) as e:
        validate_config(config, case.devices, case.processes)
    message = str(e.value)
    assert re.match(rf"config\.{re.escape(case.field)}\b", message), message
    assert "\n" not in message
