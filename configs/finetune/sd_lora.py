"""LoRA fine-tuning of a Stable Diffusion workdir on the Noto emoji captions (issue 13).

  python -m ldm_jax.convert diffusers --dir SD_FOLDER --out runs/sd
  python -m ldm_jax.train --config configs/finetune/sd_lora.py --workdir runs/sd_lora \
      --config.finetune.base_workdir=runs/sd
  python -m ldm_jax.sample --workdir runs/sd_lora --task text2img --prompt "red heart" --out x.png
  python -m ldm_jax.evaluate --workdir runs/sd_lora --what text2img
  python -m ldm_jax.export --workdir runs/sd_lora --out runs/sd_lora_diffusers
  # diffusers: pipe.load_lora_weights("runs/sd_lora/lora")

The base workdir gives the networks, the diffusion settings and the sampler (see
`ldm_jax/trainers/finetune.py`); this file states what fine-tuning changes: rank-4 LoRA (alpha 4)
on the U-Net attention projections to_q/to_k/to_v/to_out.0, AdamW 1e-4, min-SNR-5 loss
weighting, 10% caption dropout, EMA 0.999, the emoji at the base's image size
(`data.image_size = 0`). Offset noise (`diffusion.offset_noise`, e.g. 0.05) and DreamBooth prior
preservation (`finetune.prior_preservation`) are off. The text encoder stays frozen;
`--config.finetune.lora.text_encoder=True` also trains LoRA (the same rank and alpha) on its
attention projections q/k/v/out_proj (`ldm_jax/trainers/finetune_text.py`).

Runtime and result: `experiments/finetune/` (a small imported model on 2 CPU cores; an SD 1.5
base at 512 px needs an accelerator: the 859M-parameter U-Net's LoRA step). `:tiny` is the
seconds-long variant for tests: batch 8, 3 steps on the first 64 training emoji, rank 2.
"""

from __future__ import annotations

import ml_collections

from ldm_jax.config import defaults
from ldm_jax.config.options import default_mesh_config
from ldm_jax.models.lora import UNET_ATTENTION_TARGETS

TINY = "tiny"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The experiment config; `arg`: None or "tiny"."""
    if arg not in (None, "", TINY):
        raise ValueError(f"Unknown config argument {arg!r}; use 'tiny' or nothing.")
    c = ml_collections.ConfigDict()
    c.name = "sd_lora"
    c.stage = "finetune"
    c.seed = 0
    c.finetune = dict(
        base_workdir="",  # required: the workdir to fine-tune
        method="lora",
        lora=dict(rank=4, alpha=4.0, targets=UNET_ATTENTION_TARGETS, text_encoder=False),
        prior_preservation=dict(enabled=False, class_prompt="", num_class_images=64, weight=1.0),
    )
    c.data = dict(
        name="noto_emoji",
        data_dir="",
        path="",
        image_size=0,  # 0: the base model's
        channels=3,
        num_classes=0,
        train_split="train",
        crop="center",
    )
    # Over the base workdir's diffusion section.
    c.diffusion = dict(loss_weighting="min_snr", min_snr_gamma=5.0, offset_noise=0.0)
    c.train = defaults.section(defaults.TRAIN)
    c.train.update(
        steps=1000,
        batch_size=32,
        learning_rate=1e-4,
        warmup_steps=50,
        weight_decay=1e-2,
        ema_decay=0.999,
        cond_drop_prob=0.1,
        log_every=50,
        checkpoint_every=500,
        sample_every=0,
    )
    # Over the base workdir's sample section (its sampler and timestep spacing stay).
    c.sample = dict(steps=50, eta=0.0, guidance_scale=4.0, per_class=8)
    c.mesh = default_mesh_config()
    if arg == TINY:
        c.finetune.lora.update(rank=2, alpha=2.0)
        c.finetune.prior_preservation.num_class_images = 8
        c.data.train_split = "train[:64]"
        c.train.update(steps=3, batch_size=8, warmup_steps=0, log_every=1, checkpoint_every=2)
        c.train.final_samples = False
        c.sample.update(steps=4)
    return c
