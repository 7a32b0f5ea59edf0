"""Benchmarks: train-step throughput, compiled memory and sampling speed; prints JSON lines.

  python -m ldm_jax.bench --config configs/quickstart.py [--what ae_step,ldm_step,sample]
      [--batch 0 (config's)] [--steps 20] [--sample_steps 50]

See `ldm_jax.benchmarks.train_steps` for what each benchmark measures.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from ldm_jax.benchmarks.train_steps import BENCHMARKS, run
from ldm_jax.cli_errors import user_errors_as_exit

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WHAT = flags.DEFINE_list("what", list(BENCHMARKS), f"Benchmarks to run, of {BENCHMARKS}.")
_BATCH = flags.DEFINE_integer("batch", 0, "Batch size (0: the config's).")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed iterations after compilation.")
_SAMPLE_STEPS = flags.DEFINE_integer("sample_steps", 50, "Sampler steps for 'sample'.")
flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    with user_errors_as_exit("python -m ldm_jax.bench"):
        logging.set_verbosity(logging.WARNING)
        run(_CONFIG.value, _WHAT.value, _BATCH.value, _STEPS.value, _SAMPLE_STEPS.value)


if __name__ == "__main__":
    app.run(main)
