"""The f study (the paper's Figs. 6-7) at CPU scale: LDM-f for f = 1, 2, 4, 8, 16 on 32x32 data.

  python -m ldm_jax.train --config configs/f_study/ldm.py:fashion_mnist,4 \
      --workdir runs/f_study/fashion_mnist_f4
  python experiments/f_study/run.py          # every f, matched training FLOPs, scored

`arg` is "<dataset>,<f>[,tiny]" with dataset "fashion_mnist" (class-conditional, 10 classes plus
a null class for classifier-free guidance) or "emoji" (Noto emoji, unconditional: the emoji
carry no class labels) and f in 1, 2, 4, 8, 16. f = 1 is the identity first stage (pixel space,
the paper's LDM-1); f > 1 borrows the f sweep's trained KL autoencoder
(`configs/autoencoders/<dataset>/kl_f<f>.py`, trained by `experiments/autoencoders/run.py` into
`runs/autoencoders/<dataset>_kl_f<f>`) through `train.first_stage_workdir`.

One U-Net for every f: the quickstart's (width 32, multipliers (1, 2, 2), one ResBlock a level,
a transformer block with cross-attention to the class token at downsampling rates 2 and 4 and in
the middle; self-attention only for emoji), with as many levels as the latent side allows (the
2x2 latents of f = 16 get two levels: 2x2 and 1x1). The same diffusion for every f: the paper's
LDM schedule (scaled-linear 0.0015 -> 0.0195, 1000 steps, epsilon, L2), inputs scaled by 1/std of
the first batch (`scale_by_std`, also for pixels); the first 8,192 Fashion-MNIST training images
(all ~1,300 training emoji); batch 64, Adam 1e-3 after 100 warm-up steps,
EMA 0.999 (with the reference's warm-up), condition dropout 0.1; DDIM eta 1, guidance 2 for
Fashion-MNIST, unguided for emoji. `train.steps` is set by the study (matched FLOPs).

`,tiny` is the seconds-long variant for tests (`experiment.finalize`: synthetic shapes, a tiny
first stage of the same f up to 8, untrained, so no borrowed workdir).
"""

from __future__ import annotations

import math
import os

import ml_collections

from ldm_jax.config import experiment, presets, small_first_stages

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FACTORS = (1, 2, 4, 8, 16)
DATASETS = {"fashion_mnist": "fashion_mnist", "emoji": "noto_emoji"}
IMAGE_SIZE = 32
MAX_LEVELS = 3  # the quickstart U-Net's channel_mult (1, 2, 2)
NUM_CLASSES = 10  # Fashion-MNIST
# The latent cache encodes the whole training split before the first step; for 60,000
# Fashion-MNIST images that costs more CPU time here than the LDM-4 training itself, and no run
# of the study sees more than 20,000 images, so the study trains on the first 8,192.
TRAIN_SPLITS = {"fashion_mnist": "train[:8192]"}


def autoencoder_workdir(dataset: str, f: int) -> str:
    """Where the f sweep trains the KL first stage of `dataset` at `f`."""
    return os.path.join(ROOT, "runs", "autoencoders", f"{dataset}_kl_f{f}")


def parse(arg: str | None) -> tuple[str, int, bool]:
    """(dataset, f, tiny) from "<dataset>,<f>[,tiny]"."""
    parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
    tiny = bool(parts) and parts[-1] == experiment.TINY
    parts = parts[:-1] if tiny else parts
    if len(parts) != 2 or parts[0] not in DATASETS or not parts[1].isdigit():
        raise ValueError(f"Config argument {arg!r}: use '<dataset>,<f>[,tiny]', e.g. 'emoji,4'.")
    f = int(parts[1])
    if f not in FACTORS:
        raise ValueError(f"f={f}: the study has f in {FACTORS}.")
    return parts[0], f, tiny


def unet(latent_side: int, channels: int, conditional: bool) -> dict:
    """The study's U-Net on `latent_side`^2 x `channels` inputs."""
    levels = min(MAX_LEVELS, int(math.log2(latent_side)) + 1)
    out = dict(
        image_size=latent_side,
        in_channels=channels,
        out_channels=channels,
        model_channels=32,
        channel_mult=(1, 2, 2)[:levels],
        num_res_blocks=1,
        attention_resolutions=(2, 4),
        num_head_channels=32,
    )
    if conditional:
        out.update(use_spatial_transformer=True, transformer_depth=1, context_dim=128)
    return out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The experiment config; `arg`: "<dataset>,<f>[,tiny]"."""
    dataset, f, tiny = parse(arg)
    data = dict(small_first_stages.DATASETS[DATASETS[dataset]])
    conditional = dataset == "fashion_mnist"
    if f == 1:
        first, latent = dict(kind="identity", in_channels=data["channels"]), data["channels"]
    else:
        first = small_first_stages.first_stage("kl", f, data["channels"], IMAGE_SIZE)
        latent = first["embed_dim"]
    c = ml_collections.ConfigDict()
    c.name = f"f_study_{dataset}_f{f}"
    c.reference = "LDM-f of the paper's Sec. 4.1 (Figs. 6-7), at CPU scale"
    c.stage = "ldm"
    c.model = dict(
        conditioning_key="crossattn" if conditional else None,
        first_stage=first,
        unet=unet(IMAGE_SIZE // f, latent, conditional),
        cond_stage=(
            dict(kind="class", n_classes=NUM_CLASSES + 1, embed_dim=128, add_null_class=True)
            if conditional
            else dict(kind="none")
        ),
    )
    c.diffusion = presets.diffusion("ldm", scale_by_std=True)
    c.data = dict(data, num_classes=NUM_CLASSES if conditional else 0, crop="center")
    if dataset in TRAIN_SPLITS:
        c.data.train_split = TRAIN_SPLITS[dataset]
    c.train = dict(
        steps=1000,
        batch_size=64,
        learning_rate=1e-3,
        warmup_steps=100,
        ema_decay=0.999,
        cond_drop_prob=0.1 if conditional else 0.0,
        log_every=25,
        checkpoint_every=10**9,  # the study trains in chunks; a checkpoint ends each
        keep_checkpoints=1,
        sample_every=0,
        final_samples=False,
        first_stage_workdir="" if f == 1 else autoencoder_workdir(dataset, f),
    )
    c.sample = dict(
        sampler="ddim", steps=25, eta=1.0, guidance_scale=2.0 if conditional else 1.0, per_class=8
    )
    c = experiment.finalize(c, experiment.TINY if tiny else None)
    if tiny:
        c.train.first_stage_workdir = ""
        c.train.update(steps=3, warmup_steps=1, log_every=1)
    return c
