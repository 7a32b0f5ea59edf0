"""4x super-resolution on Fashion-MNIST (8x8 -> 32x32): a KL f=4 LDM whose condition is the
low-resolution image concatenated to z_t (the paper's concat conditioning of `bsr_sr`, Sec. 4.4,
at CPU scale: 8x8 latents of 32x32 images, the same size as the 8x8 input, as 64x64 latents of
256x256 images are the size of bsr_sr's 64x64 input).

  python -m ldm_jax.train --config configs/tasks/fashion_mnist/superres_x4.py --workdir runs/sr
  python -m ldm_jax.sample --workdir runs/sr --task superres --image low_8x8.png --num 4 \
      --out sr.png           # any low-res size whose sides are multiples of 4: output 4x larger
  python -m ldm_jax.evaluate --workdir runs/sr --what superres [--num 1000 --steps 50]

Data: Fashion-MNIST, 28x28 framed to 32x32 grey, the 60,000 training images; the condition is
each image down-sampled by 4 to 8x8 (`train.superres_degradation` "bicubic": `jax.image.resize`
bicubic with antialiasing, deterministic; "bsr_light" trains on the light BSR degradations
instead, `data/degradations.py`), made inside the train step from the batch's pixels.

Model: the f sweep's KL f=4 first stage (`ldm_jax/config/small_first_stages.py`, 1 channel,
8x8x3 latents) trained with L1 + KL for 800 steps of batch 16 (the unconditional and inpainting
Fashion-MNIST configs use the same first-stage section, so they can borrow this workdir's with
`--config.stage=ldm --config.train.first_stage_workdir=runs/sr`); the small tasks' U-Net
(`ldm_jax/config/small_tasks.py`: width 32, multipliers (1, 2, 2), self-attention at 4x4, 2x2
and the middle) on 4 input channels (z_t's 3 and the grey 8x8 image) and 3 output channels. The
paper's LDM schedule, latents scaled by 1/std of the first batch; 2000 steps of batch 64, Adam
1e-3, EMA 0.999. Concat conditions are never dropped: sampling is unguided (DDIM 50 steps, eta 1).

Runtime (2 cores, XLA matmul 208 GFLOP/s, lightly loaded): stage 1 234 s, the LDM 398 s. Result
(`experiments/tasks/superres/`): PSNR 20.55 dB and LPIPS 0.219 against bicubic's 16.73 dB and
0.440 (ceiling D(E(x)): 23.12 dB, 0.163). `python -m ldm_jax.evaluate --workdir
runs/sr --what superres` scores it (`ldm_jax/evaluation/superres.py`): PSNR and LPIPS-VGG of one
super-resolved sample per low-res input of the first 1000 test images, beside bicubic and
nearest-neighbour up-sampling of the same inputs and the first stage's reconstruction D(E(x))
(the ceiling of a perfect LDM through this autoencoder).

`:tiny` is the seconds-long variant for tests (`experiment.finalize`): 32x32 synthetic shapes
(3 channels, so the low-res input is 8x8 RGB and the U-Net takes 3 + 3 channels), the tiny KL f=4
first stage, 2 + 3 steps.
"""

from __future__ import annotations

import ml_collections

from ldm_jax.config import experiment, presets, small_tasks

CHANNELS = 1  # grey Fashion-MNIST


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The experiment config; `arg`: None or "tiny"."""
    c = ml_collections.ConfigDict()
    c.name = "fashion_mnist_superres_x4"
    c.reference = "models/ldm/bsr_sr/config.yaml (concat low-res image, identity), CPU scale"
    c.stage = "both"
    first_stage = small_tasks.first_stage(CHANNELS)
    latent = first_stage["embed_dim"]
    c.model = dict(
        conditioning_key="concat",
        first_stage=first_stage,
        # z_t (3) + the grey low-resolution image (1), at the latent size 8x8.
        unet=small_tasks.unet(in_channels=latent + CHANNELS, out_channels=latent),
        cond_stage=dict(kind="identity"),
    )
    c.diffusion = presets.diffusion("ldm", scale_by_std=True)
    c.data = small_tasks.fashion_mnist_data()
    c.autoencoder_train = small_tasks.first_stage_training()
    c.train = small_tasks.ldm_training()
    c.train.superres_degradation = "bicubic"
    c.sample = small_tasks.sampling()
    return experiment.finalize(c, arg)
