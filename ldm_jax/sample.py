"""Samples from a trained or imported workdir and writes a PNG grid (a JSON line on stdout).

  python -m ldm_jax.sample --workdir runs/quickstart --class 7 --num 16 --out sneakers.png \
      [--guidance 2.0 --sampler ddim --steps 50 --eta 1.0 --seed 0]
  python -m ldm_jax.sample --workdir runs/txt2img --task text2img --prompt "a red fox"
  python -m ldm_jax.sample --workdir runs/sd15 --task text2img --prompt "a castle" \
      --negative_prompt "blurry" --guidance 7.5 --guidance_rescale 0.7 --num 4 --seed 3
  python -m ldm_jax.sample --workdir runs/sd15 --task img2img --image x.png --strength 0.6 \
      --prompt "an oil painting"                              # img2img = edit
  python -m ldm_jax.sample --workdir runs/sr --task superres --image low_res.png
  python -m ldm_jax.sample --workdir runs/inpaint --task inpaint --image x.png --mask m.png
  python -m ldm_jax.sample --workdir runs/semantic --task semantic --image labels.png
  python -m ldm_jax.sample --workdir runs/l2i --task layout --layout layout.json  # or test:7
  python -m ldm_jax.sample --workdir runs/quickstart --task edit --image x.png --strength 0.6 \
      --class 3 --guidance 3 --num 8 --out edits.png          # img2img under a new class
  python -m ldm_jax.sample --workdir runs/txt2img --task edit --image x.png --mask m.png \
      --prompt "a red heart"                                   # prompt-guided inpainting

The task must be the one the workdir's model performs (`sampling/tasks.py`), except that any
unconditional, class- or text-conditioned model also runs `edit` and `inpaint`.

Inpainting has two modes, chosen by the workdir's model:
  * a model trained for inpainting (the paper's concat inpainting model, SD inpainting) takes the
    masked image's latent and the mask as its condition;
  * any other model (unconditional, class, text) inpaints by masked sampling, as the paper does
    with models trained without masks: every step the latents outside the hole are replaced by
    the image's latent noised to that step, and the known pixels are pasted back after decoding.
Masks are white where pixels are to be filled in. `--task edit` noises the image's latent to
`--strength` (in (0, 1]; 0.75 by default; near 0 returns the image, 1 ignores it) and denoises it
under `--class`/`--prompt`; with `--mask` it edits only the white region.
"""

from __future__ import annotations

from ldm_jax.training import host_memory

# First, before the heavy imports: glibc reads its tunables only when a process starts.
host_memory.rerun_with_huge_pages("ldm_jax.sample")

import json
import sys

from absl import app, flags

from ldm_jax import cli_errors
from ldm_jax.config.validation import SAMPLERS
from ldm_jax.interop.tensors import WeightMismatchError, one_line_summary
from ldm_jax.interop.torch_pickle import CheckpointFormatError
from ldm_jax.sampling import images as image_grid
from ldm_jax.sampling.image_inputs import ImageInputError
from ldm_jax.sampling.tasks import TASKS, SampleInputError, SampleRequest, run
from ldm_jax.training import logging as log
from ldm_jax.workdir.reader import WorkdirError, load_trained_ldm

_WORKDIR = flags.DEFINE_string("workdir", None, "Training or imported workdir to sample from.")
_TASK = flags.DEFINE_enum("task", "generate", list(TASKS), "What to sample (see the docstring).")
flags.DEFINE_integer(
    "class", None, "Class label to generate (Fashion-MNIST: 0..9); default: one row per class."
)
_PROMPT = flags.DEFINE_string("prompt", None, "Caption (text2img; edit/inpaint of text models).")
_NEGATIVE = flags.DEFINE_string(
    "negative_prompt",
    None,
    "Caption that guidance steers away from (text models; default: the empty caption).",
)
_IMAGE = flags.DEFINE_string(
    "image",
    None,
    "Input PNG: the low-res image (superres), the image (inpaint, edit), a label map (semantic).",
)
_MASK = flags.DEFINE_string(
    "mask", None, "Mask PNG for inpaint and edit (white: pixels to fill in)."
)
_STRENGTH = flags.DEFINE_float(
    "strength", None, "--task edit: how far the image is noised, in (0, 1] (default 0.75)."
)
_LAYOUT = flags.DEFINE_string(
    "layout",
    None,
    '--task layout: a JSON file [{"class": id or name, "box": [x0, y0, x1, y1]}, ...] '
    "(normalised corners), or test:INDEX for a test canvas's layout.",
)
_NUM = flags.DEFINE_integer("num", 16, "Number of images (per class when --class is not set).")
_OUT = flags.DEFINE_string("out", "samples.png", "Output PNG path.")
_GUIDANCE = flags.DEFINE_float(
    "guidance",
    None,
    "Classifier-free guidance scale (default: the config's sample.guidance_scale; 1 disables).",
)
_RESCALE = flags.DEFINE_float(
    "guidance_rescale",
    None,
    "Guidance rescale in [0, 1] (Lin et al. 2023; diffusers' guidance_rescale; default 0).",
)
_SAMPLER = flags.DEFINE_enum("sampler", None, list(SAMPLERS), "Sampler (default: the config's).")
_STEPS = flags.DEFINE_integer("steps", None, "Sampler steps (default: the config's).")
_ETA = flags.DEFINE_float("eta", None, "DDIM eta (0: deterministic; default: the config's).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
flags.mark_flags_as_required(["workdir"])

PROGRAM = "python -m ldm_jax.sample"


def main(argv):
    log.show_own_status_only()
    with cli_errors.user_errors_as_exit(PROGRAM):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        request = SampleRequest(
            task=_TASK.value,
            num=_NUM.value,
            class_label=flags.FLAGS["class"].value,
            prompt=_PROMPT.value,
            image=_IMAGE.value,
            mask=_MASK.value,
            guidance=_GUIDANCE.value,
            sampler=_SAMPLER.value,
            steps=_STEPS.value,
            eta=_ETA.value,
            seed=_SEED.value,
            strength=_STRENGTH.value,
            layout=_LAYOUT.value,
            negative_prompt=_NEGATIVE.value,
            guidance_rescale=_RESCALE.value,
        )
        try:
            result = run(load_trained_ldm(_WORKDIR.value), request)
        except (
            SampleInputError,
            ImageInputError,
            WorkdirError,
            CheckpointFormatError,  # a workdir's text encoder file: corrupt or truncated
            WeightMismatchError,
        ) as e:
            sys.exit(f"{PROGRAM}: error: {one_line_summary(str(e))}")
        grid = image_grid.make_grid(result.images, result.columns)
        path = image_grid.save_png(_OUT.value, grid)
        print(json.dumps({"out": path, **result.info}))


if __name__ == "__main__":
    cli_errors.run(main, PROGRAM)
