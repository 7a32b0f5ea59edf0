"""Shared blocks of the paper and Stable Diffusion configs: first stages, U-Nets, tau_theta and
diffusion settings, each a plain dict of the reference YAML's fields.

A config under `configs/paper/` or `configs/sd/` names its blocks here and states only what
differs, e.g. `presets.unet("sd_v1", in_channels=9)`. Every block is checked against the typed
schema (`config.schema`) when it is returned, so a misspelt change fails with the closest valid
field name. The dicts hold only the fields the reference YAMLs state (everything else takes the
schema's reference defaults), so a config reads like its YAML.

First stages (the model zoo's `models/first_stage_models/*/config.yaml`, paper Tab. 8):
  kl_f4 kl_f8 kl_f16 kl_f32 vq_f4 vq_f4_noattn vq_f8 vq_f8_n256 vq_f16
U-Nets shared by several configs:
  ldm_vq4_uncond (CelebA-HQ, FFHQ, LSUN-Bedrooms LDM-VQ-4), cin256_v2 (also text2img256),
  semantic_synthesis (256 and 512), sd_v1 (SD v1, its inpainting model, txt2img-1p4B),
  sd_v2 (SD 2 base and 768-v)
First-stage training (the zoo YAMLs' `lossconfig`, as `autoencoder_train`): the same names.
Condition encoders: frozen_clip_vit_l14 (SD v1), frozen_openclip_vit_h14 (SD 2)
Diffusion: ldm (the paper's LDMs: scaled_linear 0.0015 -> 0.0195, 1000 steps, eps, L2, latent
  scale 1) and sd (txt2img-1p4B and Stable Diffusion: 0.00085 -> 0.012, scale 0.18215).
"""

from __future__ import annotations

from typing import Any

from ldm_jax.config import schema
from ldm_jax.losses.first_stage_loss import FirstStageLossConfig
from ldm_jax.models.specs import closest


def _ddconfig(
    kind: str,
    embed_dim: int,
    ch_mult: tuple[int, ...],
    attn_resolutions: tuple[int, ...] = (),
    n_embed: int | None = None,
) -> dict[str, Any]:
    """The zoo's `ddconfig` (+ embed_dim, n_embed): 256 px RGB, ch 128, 2 ResBlocks a level."""
    out = dict(kind=kind, embed_dim=embed_dim)
    if n_embed is not None:
        out["n_embed"] = n_embed
    out.update(
        double_z=kind == "kl",
        z_channels=embed_dim,
        resolution=256,
        in_channels=3,
        out_ch=3,
        ch=128,
        ch_mult=ch_mult,
        num_res_blocks=2,
        attn_resolutions=attn_resolutions,
        dropout=0.0,
    )
    return out


FIRST_STAGES: dict[str, dict[str, Any]] = {
    "kl_f4": _ddconfig("kl", 3, (1, 2, 4)),
    "kl_f8": _ddconfig("kl", 4, (1, 2, 4, 4)),
    "kl_f16": _ddconfig("kl", 16, (1, 1, 2, 2, 4), (16,)),
    "kl_f32": _ddconfig("kl", 64, (1, 1, 2, 2, 4, 4), (16, 8)),
    "vq_f4": _ddconfig("vq", 3, (1, 2, 4), n_embed=8192),
    "vq_f4_noattn": dict(_ddconfig("vq", 3, (1, 2, 4), n_embed=8192), attn_type="none"),
    "vq_f8": _ddconfig("vq", 4, (1, 2, 2, 4), (32,), n_embed=16384),
    "vq_f8_n256": _ddconfig("vq", 4, (1, 2, 2, 4), (32,), n_embed=256),
    "vq_f16": _ddconfig("vq", 8, (1, 1, 2, 2, 4), (16,), n_embed=16384),
}


def _kl_loss_training(batch_size: int) -> dict[str, Any]:
    """`autoencoder_train` of the zoo's KL models: `LPIPSWithDiscriminator(disc_start=50001,
    kl_weight=1e-6, disc_weight=0.5)`, Adam(0.5, 0.9) at 4.5e-6 x batch (one device), no L2."""
    loss = dict(perceptual_weight=1.0, disc_weight=0.5, disc_start=50001, adam_b1=0.5, adam_b2=0.9)
    return dict(
        batch_size=batch_size,
        learning_rate=4.5e-6 * batch_size,
        warmup_steps=0,
        grad_clip=0.0,
        kl_weight=1e-6,
        l2_weight=0.0,
        loss=loss,
    )


def _vq_loss_training(
    batch_size: int, disc_start: int, disc_weight: float = 0.75, disc_num_layers: int = 3
) -> dict[str, Any]:
    """`autoencoder_train` of the zoo's VQ models: taming's `VQLPIPSWithDiscriminator` with
    codebook_weight 1, Adam(0.5, 0.9) at 4.5e-6 x batch (one device), no L2."""
    loss = dict(
        perceptual_weight=1.0,
        disc_weight=disc_weight,
        disc_start=disc_start,
        disc_num_layers=disc_num_layers,
        adam_b1=0.5,
        adam_b2=0.9,
    )
    return dict(
        batch_size=batch_size,
        learning_rate=4.5e-6 * batch_size,
        warmup_steps=0,
        grad_clip=0.0,
        codebook_weight=1.0,
        l2_weight=0.0,
        loss=loss,
    )


# The zoo YAMLs' `lossconfig` and data batch size, as `autoencoder_train` sections.
FIRST_STAGE_TRAINING: dict[str, dict[str, Any]] = {
    "kl_f4": _kl_loss_training(10),
    "kl_f8": _kl_loss_training(4),
    "kl_f16": _kl_loss_training(6),
    "kl_f32": _kl_loss_training(6),
    "vq_f4": _vq_loss_training(8, disc_start=0),
    "vq_f4_noattn": _vq_loss_training(8, disc_start=11),
    "vq_f8": _vq_loss_training(10, disc_start=1, disc_weight=0.6, disc_num_layers=2),
    "vq_f8_n256": _vq_loss_training(10, disc_start=250001),
    "vq_f16": _vq_loss_training(14, disc_start=250001, disc_num_layers=2),
}

_SD_V1_UNET = dict(
    image_size=32,
    in_channels=4,
    out_channels=4,
    model_channels=320,
    attention_resolutions=(4, 2, 1),
    num_res_blocks=2,
    channel_mult=(1, 2, 4, 4),
    num_heads=8,
    use_spatial_transformer=True,
    transformer_depth=1,
    context_dim=768,
    legacy=False,
)

UNETS: dict[str, dict[str, Any]] = {
    "ldm_vq4_uncond": dict(
        image_size=64,
        in_channels=3,
        out_channels=3,
        model_channels=224,
        attention_resolutions=(8, 4, 2),
        num_res_blocks=2,
        channel_mult=(1, 2, 3, 4),
        num_head_channels=32,
    ),
    "cin256_v2": dict(
        image_size=64,
        in_channels=3,
        out_channels=3,
        model_channels=192,
        attention_resolutions=(8, 4, 2),
        num_res_blocks=2,
        channel_mult=(1, 2, 3, 5),
        num_heads=1,
        use_spatial_transformer=True,
        transformer_depth=1,
        context_dim=512,
    ),
    "semantic_synthesis": dict(
        image_size=64,
        in_channels=6,
        out_channels=3,
        model_channels=128,
        attention_resolutions=(32, 16, 8),
        num_res_blocks=2,
        channel_mult=(1, 4, 8),
        num_heads=8,
    ),
    "sd_v1": _SD_V1_UNET,
    # SD 2: heads of 64 channels instead of 8 heads, linear projections, OpenCLIP-H context.
    "sd_v2": dict(
        {k: v for k, v in _SD_V1_UNET.items() if k != "num_heads"},
        num_head_channels=64,
        use_linear_in_transformer=True,
        context_dim=1024,
    ),
}

COND_STAGES: dict[str, dict[str, Any]] = {
    "frozen_clip_vit_l14": dict(
        kind="frozen_clip", version="openai/clip-vit-large-patch14", max_length=77
    ),
    "frozen_openclip_vit_h14": dict(
        kind="frozen_openclip",
        arch="ViT-H-14",
        version="laion2b_s32b_b79k",
        layer="penultimate",
        max_length=77,
    ),
}

_LDM_DIFFUSION = dict(
    schedule="scaled_linear",
    num_timesteps=1000,
    beta_start=0.0015,
    beta_end=0.0195,
    prediction_type="epsilon",
    loss_type="l2",
    scale_factor=1.0,
    scale_by_std=False,
)

DIFFUSION: dict[str, dict[str, Any]] = {
    "ldm": _LDM_DIFFUSION,
    "sd": dict(_LDM_DIFFUSION, beta_start=0.00085, beta_end=0.012, scale_factor=0.18215),
}


def _pick(
    table: dict[str, dict[str, Any]],
    what: str,
    name: str,
    changes: dict[str, Any],
    drop: tuple[str, ...] = (),
) -> dict[str, Any]:
    if name not in table:
        raise ValueError(
            f"Unknown {what} preset {name!r}{closest(name, table)}; presets: {', '.join(table)}."
        )
    for key in drop:
        if key not in table[name]:
            raise ValueError(f"The {what} preset {name!r} has no field {key!r} to drop.")
    kept = {k: v for k, v in table[name].items() if k not in drop}
    return {**kept, **changes}


def first_stage(name: str, **changes: Any) -> dict[str, Any]:
    """A copy of the first-stage preset `name` with `changes` (checked against the schema)."""
    out = _pick(FIRST_STAGES, "first-stage", name, changes)
    schema.FirstStageConfig.from_dict(out)
    return out


def first_stage_training(name: str, **changes: Any) -> dict[str, Any]:
    """A copy of the zoo model `name`'s `autoencoder_train` section (its loss and optimizer),
    with `changes`; the loss section is checked against `FirstStageLossConfig`."""
    out = _pick(FIRST_STAGE_TRAINING, "first-stage training", name, changes)
    out["loss"] = dict(out["loss"])
    FirstStageLossConfig.from_dict(out["loss"])
    return out


def unet(name: str, drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
    """A copy of the U-Net preset `name` without the fields `drop` (back to the reference
    default), with `changes` (checked against the schema)."""
    out = _pick(UNETS, "U-Net", name, changes, drop)
    schema.UNetConfig.from_dict(out)
    return out


def cond_stage(name: str, **changes: Any) -> dict[str, Any]:
    """A copy of the condition-encoder preset `name` with `changes` (checked)."""
    out = _pick(COND_STAGES, "cond-stage", name, changes)
    schema.CondStageConfig.from_dict(out)
    return out


def diffusion(name: str, **changes: Any) -> dict[str, Any]:
    """A copy of the diffusion preset `name` with `changes` (checked against the schema)."""
    out = _pick(DIFFUSION, "diffusion", name, changes)
    schema.DiffusionConfig.from_dict(out)
    return out
