"""Writes a Stable Diffusion workdir as a diffusers pipeline folder (a JSON line on stdout).

  python -m ldm_jax.export --workdir runs/sd15_finetuned --out sd15_finetuned_diffusers

The workdir may be converted (`python -m ldm_jax.convert diffusers|sd-single-file`), trained
or fine-tuned; the folder holds unet, vae, text_encoder, tokenizer, scheduler and
model_index.json, and `StableDiffusionPipeline.from_pretrained(out)` gives the images
`python -m ldm_jax.sample` gives from the workdir (same latents, same scheduler). A LoRA
fine-tune is exported merged into the U-Net; its LoRA file on its own is in the workdir.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from ldm_jax import cli_errors
from ldm_jax.training import logging as log
from ldm_jax.workdir.reader import WorkdirError
from ldm_jax.workdir.sd_export import export_sd_pipeline

_WORKDIR = flags.DEFINE_string("workdir", None, "The Stable Diffusion workdir to export.")
_OUT = flags.DEFINE_string("out", None, "The diffusers folder to write.")
flags.mark_flags_as_required(["workdir", "out"])

PROGRAM = "python -m ldm_jax.export"


def main(argv):
    log.show_own_status_only()
    with cli_errors.user_errors_as_exit(PROGRAM):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            result = export_sd_pipeline(_WORKDIR.value, _OUT.value)
        except WorkdirError as e:
            sys.exit(f"{PROGRAM}: error: {e}")
        print(json.dumps(result))


if __name__ == "__main__":
    cli_errors.run(main, PROGRAM)
