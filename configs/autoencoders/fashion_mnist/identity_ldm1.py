"""f sweep, f = 1: LDM-1, class-conditional diffusion in pixel space on 32x32 Fashion-MNIST.

  python -m ldm_jax.train --config configs/autoencoders/fashion_mnist/identity_ldm1.py \
      --workdir runs/fm_ldm1
  python -m ldm_jax.sample --workdir runs/fm_ldm1 --class 3 --out ldm1.png
  python -m ldm_jax.evaluate --workdir runs/fm_ldm1

The identity first stage (E(x) = x, D(z) = z; the reference's `IdentityFirstStage`) has no
parameters, so there is no stage 1 (`stage="ldm"`; no autoencoder checkpoint) and the U-Net
denoises the 32x32x1 images themselves: the paper's LDM-1, the f = 1 end of its f study
(Sec. 4.1: the small factors, LDM-1 and LDM-2, make slow training progress). The U-Net is the
quickstart's (width 32, one ResBlock a level, cross-attention to a class token with a null class
for guidance) with one more level for the 4x larger input: 32x32 @ 32, 16x16 @ 64, 8x8 @ 64 and
4x4 @ 64 channels, attention at 8x8, 4x4 and in the middle. DDPM's linear pixel-space schedule
(1e-4 to 0.02, as the DDPM CIFAR-10 model) at scale 1 (pixels in [-1, 1]). Training and sampling
settings are the quickstart's (2200 steps of batch 128, EMA, condition dropout 0.1; DDIM 50
steps, eta 1, guidance 2), so LDM-1 and the quickstart's LDM-4 compare at equal steps, as the
paper's f study does.

Runtime: pixel space costs per image what f = 4 costs for 7.5 images: `python -m ldm_jax.bench
--config <this file> --what ldm_step --batch 64` gave 19.4 images/s against 145 for
configs/quickstart.py, side by side on the same (shared, loaded) 2 CPU cores. From the
quickstart's 556 s LDM stage that is about 70 minutes of training on an idle 2-core CPU (about
3.5x that on the loaded machine measured here); `--config.train.steps` shortens it. No stage 1.

Result: the full schedule has not been run yet. A short run (400 steps of batch 64, EMA 0.995:
17 minutes on the loaded machine, 2.3-2.5 s a step) reached loss 0.039, and its grid (DDIM 50,
guidance 2) shows a recognisable garment or shoe of the row's class in about a quarter of the
samples and saturated black or white squares in the rest: far from converged, as the paper's f
study leads one to expect of pixel space after few steps.

`:tiny` is the seconds-long variant for tests (3 steps on synthetic shapes, still pixel space).
"""

from __future__ import annotations

import ml_collections

from ldm_jax.config import experiment, presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The experiment config; `arg`: None or "tiny"."""
    c = ml_collections.ConfigDict()
    c.name = "fashion_mnist_identity_ldm1"
    c.reference = "ldm/models/autoencoder.py IdentityFirstStage (LDM-1), at CPU scale"
    c.stage = "ldm"  # the identity first stage has nothing to train
    c.model = dict(
        conditioning_key="crossattn",
        first_stage=dict(kind="identity", in_channels=1),
        unet=dict(
            image_size=32,
            in_channels=1,
            out_channels=1,
            model_channels=32,
            channel_mult=(1, 2, 2, 2),
            num_res_blocks=1,
            attention_resolutions=(4, 8),
            num_head_channels=32,
            use_spatial_transformer=True,
            transformer_depth=1,
            context_dim=128,
        ),
        cond_stage=dict(kind="class", n_classes=11, embed_dim=128, add_null_class=True),
    )
    c.diffusion = presets.diffusion("ldm", schedule="linear", beta_start=0.0001, beta_end=0.02)
    c.data = dict(name="fashion_mnist", image_size=32, channels=1, num_classes=10)
    return experiment.finalize(c, arg)
