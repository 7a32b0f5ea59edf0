"""Unconditional generation of 32x32 Fashion-MNIST: a KL f=4 LDM without a condition (the paper's
unconditional models, Sec. 4.1, at CPU scale); also the model trained without masks that the
inpainting evaluation's masked-sampling ("repaint") baseline uses.

  python -m ldm_jax.train --config configs/tasks/fashion_mnist/unconditional.py \
      --workdir runs/uncond
  # or borrow the first stage of another Fashion-MNIST task workdir (superres_x4.py,
  # inpainting.py: the same `model.first_stage` section):
  python -m ldm_jax.train --config configs/tasks/fashion_mnist/unconditional.py \
      --workdir runs/uncond --config.stage=ldm --config.train.first_stage_workdir=runs/sr
  python -m ldm_jax.sample --workdir runs/uncond --num 16 --out uncond.png
  # inpainting by masked sampling (known latents, noised to each step, pasted in):
  python -m ldm_jax.sample --workdir runs/uncond --task inpaint --image x.png --mask m.png
  python -m ldm_jax.evaluate --workdir runs/inpaint --what inpaint --reference_workdir runs/uncond

Data: Fashion-MNIST, 28x28 framed to 32x32 grey, the 60,000 training images (labels unused).

Model: the f sweep's KL f=4 first stage (`ldm_jax/config/small_first_stages.py`, 1 channel, 8x8x3
latents) trained with L1 + KL for 800 steps of batch 16, the same `model.first_stage` section as
`superres_x4.py` and `inpainting.py`; the small tasks' U-Net (`ldm_jax/config/small_tasks.py`:
width 32, multipliers (1, 2, 2), self-attention at 4x4, 2x2 and the middle; 1.16M parameters) on
z_t's 3 channels (`conditioning_key` None, `cond_stage` kind "none", as
`configs/paper/ffhq_ldm_vq4.py`). The paper's LDM schedule (scaled-linear 0.0015 -> 0.0195, L2 loss
on epsilon), latents scaled by 1/std of the first batch; 2000 steps of batch 64, Adam 1e-3, EMA
0.999; DDIM 50 steps, eta 1.

Runtime: the LDM 404 s on a borrowed first stage (2 cores). Result: its masked-sampling
inpainting scores PSNR 10.91 dB in the hole (`experiments/tasks/inpainting/`; scored by
`python -m ldm_jax.evaluate --what inpaint --reference_workdir`, see
`ldm_jax/evaluation/inpainting.py`).

`:tiny` is the seconds-long variant for tests (`experiment.finalize`): 32x32 synthetic shapes
(3 channels), the tiny KL f=4 first stage, 2 + 3 steps.
"""

from __future__ import annotations

import ml_collections

from ldm_jax.config import experiment, presets, small_tasks

CHANNELS = 1  # grey Fashion-MNIST


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The experiment config; `arg`: None or "tiny"."""
    c = ml_collections.ConfigDict()
    c.name = "fashion_mnist_unconditional"
    c.reference = "configs/latent-diffusion/ffhq-ldm-vq-4.yaml (unconditional), CPU scale"
    c.stage = "both"
    first_stage = small_tasks.first_stage(CHANNELS)
    latent = first_stage["embed_dim"]
    c.model = dict(
        conditioning_key=None,
        first_stage=first_stage,
        unet=small_tasks.unet(in_channels=latent, out_channels=latent),
        cond_stage=dict(kind="none"),
    )
    c.diffusion = presets.diffusion("ldm", scale_by_std=True)
    c.data = small_tasks.fashion_mnist_data()
    c.autoencoder_train = small_tasks.first_stage_training()
    c.train = small_tasks.ldm_training()
    c.sample = small_tasks.sampling()
    return experiment.finalize(c, arg)
