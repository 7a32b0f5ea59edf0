"""The shared pieces of the CPU-scale task configs (`configs/tasks/<dataset>/*.py`).

Every small task model is the quickstart's U-Net shape on 8x8 latents of 32x32 images (the KL
f=4 first stage of `small_first_stages`): width 32, channel multipliers (1, 2, 2) (8x8 @ 32,
4x4 @ 64, 2x2 @ 64), one ResBlock a level, attention at 4x4, 2x2 and in the middle with heads of
32 channels; SpatialTransformers with cross-attention when the task has a context (text, layout),
plain self-attention blocks for the concat tasks (super-resolution, inpainting, semantic maps)
and the unconditional model, as the paper's models of each kind. The LDM trains 2000 steps of
batch 64 (Adam 1e-3, 200 warm-up steps, EMA 0.999) and samples with DDIM, 50 steps, eta 1.
"""

from __future__ import annotations

from typing import Any

from ldm_jax.config import small_first_stages

IMAGE_SIZE = 32
F = 4
LATENT_SIZE = IMAGE_SIZE // F  # 8
FIRST_STAGE_STEPS = 800
LDM_STEPS = 2000


def first_stage(channels: int) -> dict[str, Any]:
    """The `model.first_stage` section: the f sweep's KL f=4 on 32x32 images of `channels`
    (8x8x3 latents). Every task config of a dataset shares it, so one trained first stage
    serves them all (`--config.train.first_stage_workdir`)."""
    return small_first_stages.first_stage("kl", F, channels=channels, image_size=IMAGE_SIZE)


def first_stage_training() -> dict[str, Any]:
    """The `autoencoder_train` section: L1 + KL (no LPIPS or PatchGAN), FIRST_STAGE_STEPS of
    batch 16 (`small_first_stages.training`)."""
    return small_first_stages.training("kl", FIRST_STAGE_STEPS, paper_loss=False)


def fashion_mnist_data() -> dict[str, Any]:
    """The `data` section of the unlabelled tasks on 32x32 grey Fashion-MNIST."""
    return dict(
        name="fashion_mnist", image_size=IMAGE_SIZE, channels=1, num_classes=0, crop="center"
    )


def unet(in_channels: int, out_channels: int, context_dim: int | None = None) -> dict[str, Any]:
    """The `model.unet` section: cross-attention to `context_dim`-wide contexts when given,
    else self-attention only (concat conditions and unconditional models)."""
    out = dict(
        image_size=LATENT_SIZE,
        in_channels=in_channels,
        out_channels=out_channels,
        model_channels=32,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(2, 4),
        num_head_channels=32,
    )
    if context_dim is not None:
        out.update(use_spatial_transformer=True, transformer_depth=1, context_dim=context_dim)
    return out


def ldm_training(steps: int = LDM_STEPS, cond_drop_prob: float = 0.0) -> dict[str, Any]:
    """The `train` section; `cond_drop_prob` > 0 for the guided (cross-attention) tasks."""
    return dict(
        steps=steps,
        batch_size=64,
        learning_rate=1e-3,
        warmup_steps=200,
        ema_decay=0.999,
        cond_drop_prob=cond_drop_prob,
        log_every=50,
        checkpoint_every=500,
        sample_every=0,
    )


def sampling(guidance_scale: float = 1.0) -> dict[str, Any]:
    """The `sample` section: DDIM, 50 steps, eta 1 (guidance 1 = unguided)."""
    return dict(sampler="ddim", steps=50, eta=1.0, guidance_scale=guidance_scale, per_class=8)
