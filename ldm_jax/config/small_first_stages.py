"""The CPU-scale first stages of the f sweep: KL with f = 2, 4, 8, 16 and VQ with f = 4, 8 on
32x32 Fashion-MNIST or Noto emoji, trained with the paper's loss (pixel L1 + LPIPS-VGG +
PatchGAN with the adaptive weight, KL 1e-6 or VQ codebook/commitment).

The networks follow the zoo's shape at a smaller width: `ch` 32, one ResBlock a level, attention
in the middle block only, latent channels as the zoo (f4: 3, f8: 4, f16: 16; f2 as f4). VQ
codebooks hold 256 codes (as `vq-f8-n256`). The PatchGAN has 2 layers of width 32 (its
receptive field fits 32x32 images) and ActNorm, the reference's other option: with BatchNorm,
which normalises the real and the reconstructed batch each by its own statistics, it stayed at
chance (hinge loss 1.00 for 400 steps) and did not help (`experiments/autoencoders/`). The
discriminator joins halfway through training. Adam
(0.5, 0.9) as the reference, at a learning rate for runs of hundreds rather than hundreds of
thousands of steps. `configs/autoencoders/<dataset>/<kind>_f<f>.py` name one each.
"""

from __future__ import annotations

import ml_collections

from ldm_jax.config import experiment

DATASETS = {
    "fashion_mnist": dict(name="fashion_mnist", image_size=32, channels=1),
    "noto_emoji": dict(name="noto_emoji", image_size=32, channels=3),
}
# f -> (ch_mult, KL latent channels)
LEVELS = {
    2: ((1, 2), 3),
    4: ((1, 2, 2), 3),
    8: ((1, 2, 2, 2), 4),
    16: ((1, 2, 2, 2, 2), 16),
}
VQ_LATENT_CHANNELS = {4: 3, 8: 4}
STEPS = 600


def first_stage(kind: str, f: int, channels: int, image_size: int) -> dict:
    """The `model.first_stage` section of the sweep's `kind` ("kl" | "vq") autoencoder at `f`."""
    if f not in LEVELS or (kind == "vq" and f not in VQ_LATENT_CHANNELS):
        raise ValueError(f"No small {kind} first stage with f={f}.")
    ch_mult, kl_channels = LEVELS[f]
    embed = VQ_LATENT_CHANNELS[f] if kind == "vq" else kl_channels
    out = dict(
        kind=kind,
        ch=32,
        ch_mult=ch_mult,
        num_res_blocks=1,
        z_channels=embed,
        embed_dim=embed,
        in_channels=channels,
        out_ch=channels,
        attn_resolutions=(),
        resolution=image_size,
        dropout=0.0,
        num_groups=32,
    )
    if kind == "vq":
        out["n_embed"] = 256
    return out


def training(kind: str, steps: int = STEPS, paper_loss: bool = True) -> dict:
    """The `autoencoder_train` section; `paper_loss=False` drops LPIPS and the PatchGAN (the
    ablation that measures what they add)."""
    loss = dict(adam_b1=0.5, adam_b2=0.9)
    if paper_loss:
        loss.update(
            perceptual_weight=1.0,
            disc_weight=0.5 if kind == "kl" else 0.75,
            disc_start=steps // 2,
            disc_num_layers=2,
            disc_ndf=32,
            disc_norm="actnorm",
        )
    return dict(
        steps=steps,
        batch_size=16,
        learning_rate=5e-4,
        warmup_steps=50,
        grad_clip=1.0,
        kl_weight=1e-6,
        l2_weight=0.0,
        codebook_weight=1.0,
        log_every=50,
        checkpoint_every=max(steps // 2, 1),
        sample_every=0,
        loss=loss,
    )


def get_config(
    kind: str, f: int, dataset: str, arg: str | None = None
) -> ml_collections.ConfigDict:
    """The experiment config of one sweep member (`arg`: None or "tiny")."""
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; use one of {tuple(DATASETS)}.")
    data = DATASETS[dataset]
    c = ml_collections.ConfigDict()
    c.name = f"{dataset}_{kind}_f{f}"
    c.reference = "models/first_stage_models (shape and loss), at CPU scale"
    c.model = dict(first_stage=first_stage(kind, f, data["channels"], data["image_size"]))
    c.data = dict(data)
    c.autoencoder_train = training(kind)
    return experiment.finalize(c, arg)
