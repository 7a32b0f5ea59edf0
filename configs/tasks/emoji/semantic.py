"""Semantic synthesis on 32x32 Noto emoji: a KL f=4 LDM whose condition is a 9-class colour map,
one-hot, resized to the 8x8 latent grid by the paper's spatial rescaler and concatenated to z_t
(the paper's `semantic_synthesis256`, Sec. 4.3.2, at CPU scale).

  python -m ldm_jax.train --config configs/tasks/emoji/semantic.py --workdir runs/semantic
  # or borrow the text-to-image run's first stage (the same first-stage section, the same images):
  python -m ldm_jax.train --config configs/tasks/emoji/semantic.py --workdir runs/semantic \
      --config.stage=ldm --config.train.first_stage_workdir=runs/t2i_bert
  # labels.png: a single-channel (mode L or P) 32x32 PNG of class ids 0..8
  python -m ldm_jax.sample --workdir runs/semantic --task semantic --image labels.png \
      --num 4 --out semantic.png
  python -m ldm_jax.evaluate --workdir runs/semantic --what semantic [--num 144 --steps 50]

Data: `noto_emoji_segmentation` at 32x32: the 1,261 training emoji of `noto_emoji` (the same
renders over white, pixel for pixel, and the same train/test split, so a borrowed text-to-image
first stage was trained on exactly these images) with a map of 9 classes
(`ldm_jax/data/emoji_palette.py`): 0 background where the glyph is transparent (alpha < 128 of
255), else the nearest of 8 colour centroids in CIELAB (yellow, orange, red, purple, blue, green,
dark, light), fitted once by k-means from named seed colours on the train split's opaque pixels.
The maps are a function of the image and its alpha; 53 % of the training pixels are background,
16 % light, 7 % each yellow and dark. The 144 held-out emoji's maps are the evaluation's
conditions.

Model: the f sweep's KL f=4 first stage (`ldm_jax/config/small_first_stages.py`, 3 channels,
8x8x3 latents), trained with L1 + KL for 800 steps of batch 16, the same section as
`configs/tasks/emoji/text2img_bert.py` so either run's first stage can be borrowed as above. The
condition: the one-hot map [32, 32, 9] through the spatial rescaler (two bilinear halvings, 32 ->
16 -> 8: the fraction of each class under each latent pixel), without the paper's bias-free 1x1
projection to 3 channels: with 9 classes it would only put a rank-3 bottleneck in front of the
U-Net's first (linear) convolution, so the 9 class fractions are concatenated as they are. The
small tasks' U-Net (`ldm_jax/config/small_tasks.py`: width 32, multipliers (1, 2, 2),
self-attention at 4x4, 2x2 and the middle) on 3 + 9 = 12 input channels, 3 output channels. The
paper's LDM schedule, latents scaled by 1/std of the first batch; 2000 steps of batch 64, Adam
1e-3, EMA 0.999. Concat conditions are never dropped: sampling is unguided (DDIM 50 steps, eta 1).

Runtime: the LDM 302 s on a borrowed first stage (2 cores). Result (`experiments/tasks/semantic/`):
mIoU 0.354 on the 144 held-out maps (chance 0.097; the first stage's reconstructions 0.380, the
real images 0.939: the autoencoder loses purple and green). `python -m ldm_jax.evaluate --workdir
runs/semantic --what semantic` scores it (`ldm_jax/evaluation/semantic.py`): one sample per
held-out map, its map re-derived by `emoji_palette.label_map_from_rgb` (pure white as background,
the rest the nearest colour centroid), mIoU (per-class IoU over the whole set, averaged over the
classes of the conditioning maps) and pixel accuracy against the conditioning map, beside the
samples against the map of a different test emoji (chance) and first-stage reconstructions
D(E(x)). The real test images re-derived against their own maps, the ceiling, score 0.939 mIoU
(pixel accuracy 0.938; light 0.61 and background 0.90 IoU: white parts of an emoji read as
background), and 0.096 against a different emoji's map (seed 0).

`:tiny` is the seconds-long variant for tests: the tiny KL f=4 first stage and U-Net of
`experiment.finalize` on the first 64 training emoji of `noto_emoji_segmentation` (kept rather than
synthetic shapes, whose maps have other classes, so the sample CLI and the evaluation see emoji
maps), the rescaler on 9 classes, 2 + 3 steps.
"""

from __future__ import annotations

import ml_collections

from ldm_jax.config import experiment, presets, small_tasks
from ldm_jax.data import emoji_palette, noto_emoji_segmentation_builder

NUM_CLASSES = emoji_palette.NUM_CLASSES  # 9: background and 8 colour classes
DATASET = noto_emoji_segmentation_builder.NAME


def _rescaler() -> dict:
    """The spatial rescaler: one-hot maps [32, 32, 9] -> class fractions [8, 8, 9]."""
    return dict(
        kind="spatial_rescaler",
        n_stages=2,  # log2(f): 32 -> 16 -> 8
        method="bilinear",
        multiplier=0.5,
        in_channels=NUM_CLASSES,
    )


def _data(train_split: str = "train") -> dict:
    return dict(
        name=DATASET,
        image_size=small_tasks.IMAGE_SIZE,
        channels=3,
        num_classes=0,
        train_split=train_split,
        crop="center",
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The experiment config; `arg`: None or "tiny"."""
    c = ml_collections.ConfigDict()
    c.name = "noto_emoji_semantic"
    c.reference = "models/ldm/semantic_synthesis256 (concat, spatial_rescaler), CPU scale"
    c.stage = "both"
    first_stage = small_tasks.first_stage(channels=3)
    latent = first_stage["embed_dim"]
    c.model = dict(
        conditioning_key="concat",
        first_stage=first_stage,
        # z_t (3) + the 9 class fractions, at the latent size 8x8.
        unet=small_tasks.unet(in_channels=latent + NUM_CLASSES, out_channels=latent),
        cond_stage=_rescaler(),
    )
    c.diffusion = presets.diffusion("ldm", scale_by_std=True)
    c.data = _data()
    c.autoencoder_train = small_tasks.first_stage_training()
    c.train = small_tasks.ldm_training()
    c.sample = small_tasks.sampling()
    c = experiment.finalize(c, arg)
    if arg == experiment.TINY:
        # The tiny variant swaps the data for synthetic shapes and the rescaler for 8 classes;
        # keep the emoji maps and their 9 classes.
        c.data.update(_data("train[:64]"))
        c.model.cond_stage.update(in_channels=NUM_CLASSES)
        c.model.unet.in_channels = c.model.unet.out_channels + NUM_CLASSES
    return c
