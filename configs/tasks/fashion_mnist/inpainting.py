"""Inpainting on 32x32 Fashion-MNIST: a KL f=4 LDM conditioned, as the paper's inpainting model
(Sec. 4.5), on the latent of the masked image and the mask, concatenated to z_t, trained on
random large masks (CPU scale).

  python -m ldm_jax.train --config configs/tasks/fashion_mnist/inpainting.py --workdir runs/inpaint
  # or borrow the first stage of another Fashion-MNIST task workdir (superres_x4.py,
  # unconditional.py: the same `model.first_stage` section):
  python -m ldm_jax.train --config configs/tasks/fashion_mnist/inpainting.py \
      --workdir runs/inpaint --config.stage=ldm --config.train.first_stage_workdir=runs/uncond
  # x.png: a 32x32 grey image; m.png: 32x32, white = fill in
  python -m ldm_jax.sample --workdir runs/inpaint --task inpaint --image x.png --mask m.png \
      --num 4 --out inpainted.png
  python -m ldm_jax.evaluate --workdir runs/inpaint --what inpaint \
      --reference_workdir runs/uncond [--num 1000 --steps 50]

Data: Fashion-MNIST, 28x28 framed to 32x32 grey, the 60,000 training images. The condition is
made inside the train step from the batch's pixels (`trainers/conditions.py`, kind "inpaint"): a
random large mask per image (`data/masks.large_masks`: 2 boxes with sides of 20-60 % of the
image and 3 strokes of 4 points, 1.6-3.8 px wide; 47 % of the pixels on average, 5-95 % range
36-58 %), the masked pixels set to black (-1), the first stage's latent of that image (unscaled,
as the reference's first-stage `encode`) and the mask sampled at every 4th pixel in [-1, 1].

Model: the f sweep's KL f=4 first stage (`ldm_jax/config/small_first_stages.py`, 1 channel, 8x8x3
latents) trained with L1 + KL for 800 steps of batch 16, the same `model.first_stage` section as
`superres_x4.py` and `unconditional.py`; the small tasks' U-Net (`ldm_jax/config/small_tasks.py`:
width 32, multipliers (1, 2, 2), self-attention at 4x4, 2x2 and the middle; 1.17M parameters) on 7
input channels (z_t 3, the masked image's latent 3, the mask 1) and 3 output channels. Diffusion as
the paper's inpainting model (`configs/paper/inpainting_big.py`): the LDM schedule with beta_end
0.0205 (0.0195 in the other LDMs: a 5 % larger final beta that barely moves alpha_bar, kept for
fidelity) and the L1 loss on epsilon (the reference's choice for its inpainting and
semantic-synthesis models; nothing about 8x8 latents argues against it, but it differs from the L2
of `unconditional.py`, the masked-sampling baseline's model). Latents scaled by 1/std of the first
batch; 2000 steps of batch 64, Adam 1e-3, EMA 0.999. Concat conditions are never dropped: sampling
is unguided (DDIM 50 steps, eta 1); the known pixels are pasted back after decoding.

Runtime (2 cores, loaded by a test run): the LDM 619 s on a borrowed first stage. Result
(`experiments/tasks/inpainting/`, 1,000 test images): PSNR in the hole 14.60 dB, LPIPS 0.213,
against mean filling 9.45 dB / 0.410 and masked sampling of `unconditional.py` 10.91 / 0.297.
`python -m ldm_jax.evaluate --what inpaint` scores it (`ldm_jax/evaluation/inpainting.py`): PSNR
inside the hole and LPIPS-VGG of one inpainting per test image under fixed large masks, beside
filling the hole with the mean of the known pixels, the first stage's reconstruction pasted into
the hole, and masked sampling ("repaint") with a model trained without masks
(`--reference_workdir`, e.g. `unconditional.py`).

`:tiny` is the seconds-long variant for tests (`experiment.finalize`): 32x32 synthetic shapes
(3 channels, so the U-Net takes 3 + 3 + 1 channels), the tiny KL f=4 first stage, 2 + 3 steps.
"""

from __future__ import annotations

import ml_collections

from ldm_jax.config import experiment, presets, small_tasks

CHANNELS = 1  # grey Fashion-MNIST


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The experiment config; `arg`: None or "tiny"."""
    c = ml_collections.ConfigDict()
    c.name = "fashion_mnist_inpainting"
    c.reference = "models/ldm/inpainting_big/config.yaml (concat masked latent + mask), CPU scale"
    c.stage = "both"
    first_stage = small_tasks.first_stage(CHANNELS)
    latent = first_stage["embed_dim"]
    c.model = dict(
        conditioning_key="concat",
        first_stage=first_stage,
        # z_t (3) + the masked image's latent (3) + the mask (1), at the latent size 8x8.
        unet=small_tasks.unet(in_channels=2 * latent + 1, out_channels=latent),
        cond_stage=dict(kind="first_stage"),
    )
    c.diffusion = presets.diffusion("ldm", beta_end=0.0205, loss_type="l1", scale_by_std=True)
    c.data = small_tasks.fashion_mnist_data()
    c.autoencoder_train = small_tasks.first_stage_training()
    c.train = small_tasks.ldm_training()
    c.sample = small_tasks.sampling()
    return experiment.finalize(c, arg)
