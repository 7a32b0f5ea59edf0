"""Full fine-tuning of a Stable Diffusion workdir on the Noto emoji captions (issue 13).

  python -m ldm_jax.train --config configs/finetune/sd_full.py --workdir runs/sd_full \
      --config.finetune.base_workdir=runs/sd [--config.mesh.fsdp=8 --config.mesh.data=1]

`configs/finetune/sd_lora.py` with `finetune.method = "full"`: every denoiser parameter trains
from the base's EMA weights, with the memory options of stage 2: bf16 compute
(`train.compute_dtype`), U-Net rematerialisation (`train.remat`), gradient accumulation
(`train.grad_accum_steps`) and FSDP (`mesh.fsdp`, the default logical-axis rules shard the U-Net's
kernels); AdamW 1e-5, EMA 0.999, min-SNR-5. The base's first stage and text encoder stay frozen.

Runtime and result: `experiments/finetune/`. `:tiny`: the LoRA file's tiny variant, full, with
bf16 + remat "full" + 2 accumulation micro-batches of 8, FSDP over all devices.
"""

from __future__ import annotations

import os

import ml_collections

from ldm_jax.config.files import load_config_file

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sd_lora.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The experiment config; `arg`: None or "tiny"."""
    c = load_config_file(BASE, arg)
    c.name = "sd_full"
    c.finetune.method = "full"
    c.train.update(learning_rate=1e-5, compute_dtype="bfloat16", remat="full")
    if arg:  # FSDP over every device: the batch splits over data x fsdp and 2 micro-batches
        c.train.update(learning_rate=1e-4, grad_accum_steps=2, batch_size=16)
        c.mesh.update(data=1, fsdp=-1)
    return c
