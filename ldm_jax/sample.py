"""Samples class-conditional images from a trained workdir and writes a PNG grid.

  python -m ldm_jax.sample --workdir runs/quickstart --class 7 --num 16 --out sneakers.png \
      [--guidance 2.0 --sampler ddim --steps 50 --eta 1.0 --seed 0]
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from ldm_jax.cli_errors import user_errors_as_exit
from ldm_jax.training import image_grid
from ldm_jax.training.config_validation import SAMPLERS
from ldm_jax.training.generation import make_generate_fn
from ldm_jax.training.workdir import load_trained_ldm

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir to sample from.")
flags.DEFINE_integer(
    "class", None, "Class label to generate (Fashion-MNIST: 0..9); default: one row per class."
)
_NUM = flags.DEFINE_integer("num", 16, "Number of images (per class when --class is not set).")
_OUT = flags.DEFINE_string("out", "samples.png", "Output PNG path.")
_GUIDANCE = flags.DEFINE_float(
    "guidance",
    None,
    "Classifier-free guidance scale (default: the config's sample.guidance_scale; 1 disables).",
)
_SAMPLER = flags.DEFINE_enum("sampler", None, list(SAMPLERS), "Sampler (default: the config's).")
_STEPS = flags.DEFINE_integer("steps", None, "Sampler steps (default: the config's).")
_ETA = flags.DEFINE_float("eta", None, "DDIM eta (0: deterministic; default: the config's).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    with user_errors_as_exit("python -m ldm_jax.sample"):
        logging.set_verbosity(logging.WARNING)
        trained = load_trained_ldm(_WORKDIR.value)
        config = trained.config
        num_classes = config.data.num_classes
        cls = flags.FLAGS["class"].value
        if _NUM.value <= 0:
            raise app.UsageError(f"--num must be positive, got {_NUM.value}.")
        if cls is not None and not 0 <= cls < num_classes:
            raise app.UsageError(f"--class must be in [0, {num_classes}), got {cls}.")
        if cls is None:
            labels = np.repeat(np.arange(num_classes, dtype=np.int32), _NUM.value)
            columns = _NUM.value
        else:
            labels = np.full((_NUM.value,), cls, np.int32)
            columns = math.ceil(math.sqrt(_NUM.value))
        guidance = config.sample.guidance_scale if _GUIDANCE.value is None else _GUIDANCE.value
        steps = _STEPS.value or config.sample.steps
        eta = config.sample.eta if _ETA.value is None else _ETA.value
        sampler = _SAMPLER.value or config.sample.sampler
        generate = make_generate_fn(config, sampler, steps)
        images = generate(
            trained.ae_params,
            trained.ldm_params,
            labels,
            jax.random.PRNGKey(_SEED.value),
            jnp.float32(guidance),
            jnp.float32(eta),
            jnp.float32(trained.scale_factor),
        )
        path = image_grid.save_png(_OUT.value, image_grid.make_grid(np.asarray(images), columns))
        print(
            json.dumps(
                {
                    "out": path,
                    "num_images": int(len(labels)),
                    "class": cls,
                    "guidance": guidance,
                    "sampler": sampler,
                    "eta": eta,
                    "steps": steps,
                    "ldm_step": trained.step,
                }
            )
        )


if __name__ == "__main__":
    app.run(main)
