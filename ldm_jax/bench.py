"""Benchmarks; each prints one JSON line per measurement.

Model benchmarks (random weights; the same work as `python -m ldm_jax.benchmarks.peers`):

  python -m ldm_jax.bench unet|unet_forward|unet_train|autoencoder|sample|attention|groupnorm
      [--preset sd_small_cpu|quickstart|<config path>] [--batch 0] [--repeats 5] [--remat none]

  unet: unet_forward, then unet_train (peak RSS is the process's high-water mark: run
    unet_train alone for the training step's own peak).
  sample: 50-step DDIM + guidance (--sample_steps). attention, groupnorm: microbenchmarks.

Trainer-step benchmarks of an experiment config (see `ldm_jax.benchmarks.train_steps`):

  python -m ldm_jax.bench --config configs/quickstart.py [--what ae_step,ldm_step,sample]
      [--batch 0 (config's)] [--steps 20] [--sample_steps 50]
"""

from __future__ import annotations

from ldm_jax.training import host_memory

# First, before the heavy imports: glibc reads its tunables only when a process starts.
host_memory.rerun_with_huge_pages("ldm_jax.bench")

from absl import app, flags
from ml_collections import config_flags

from ldm_jax import cli_errors
from ldm_jax.benchmarks import micro_benches, model_benches
from ldm_jax.benchmarks.presets import get_preset
from ldm_jax.benchmarks.timing import emit
from ldm_jax.training import logging as log

COMMANDS = ("unet", "unet_forward", "unet_train", "autoencoder", "sample", "attention", "groupnorm")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_WHAT = flags.DEFINE_list(
    "what", None, "With --config: any of ae_step, ldm_step, sample (default: all three)."
)
_BATCH = flags.DEFINE_integer("batch", 0, "Batch size (0: the preset's or config's).")
_STEPS = flags.DEFINE_integer("steps", 20, "With --config: timed iterations after compilation.")
_SAMPLE_STEPS = flags.DEFINE_integer("sample_steps", 50, "Sampler steps for 'sample'.")
_PRESET = flags.DEFINE_string(
    "preset", "sd_small_cpu", "sd_small_cpu, quickstart or a config path."
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed iterations after one warm-up.")
_REMAT = flags.DEFINE_enum("remat", "none", ["none", "full", "dots"], "U-Net remat policy.")


def run_command(
    command: str, preset_name: str, batch: int, repeats: int, remat: str, sample_steps: int
) -> list[dict]:
    """Runs one model or micro benchmark; returns (and prints) its JSON records."""
    if command not in COMMANDS:
        raise ValueError(f"Unknown benchmark {command!r}; choose from {COMMANDS}.")
    if command == "attention":
        return [emit(r) for r in micro_benches.bench_attention(repeats, batch)]
    if command == "groupnorm":
        return [emit(r) for r in micro_benches.bench_groupnorm(repeats, batch)]
    preset = get_preset(preset_name, batch)
    results = []
    if command in ("unet", "unet_forward"):
        results.append(emit(model_benches.bench_unet_forward(preset, repeats)))
    if command in ("unet", "unet_train"):
        results.append(emit(model_benches.bench_unet_train(preset, repeats, remat)))
    if results:
        return results
    if command == "sample":
        return [emit(model_benches.bench_sample(preset, repeats, sample_steps))]
    return [emit(model_benches.bench_autoencoder(preset, repeats))]


PROGRAM = "python -m ldm_jax.bench"


def main(argv):
    log.show_own_status_only()
    with cli_errors.user_errors_as_exit(PROGRAM):
        if len(argv) > 2:
            raise app.UsageError(f"Unexpected arguments: {argv[2:]}")
        if len(argv) == 2:
            run_command(
                argv[1],
                _PRESET.value,
                _BATCH.value,
                _REPEATS.value,
                _REMAT.value,
                _SAMPLE_STEPS.value,
            )
        elif _CONFIG.value is not None:
            # Imported here: the trainers bring grain, 28 MB that the model benchmarks' peak RSS
            # should not carry.
            from ldm_jax.benchmarks import train_steps

            what = _WHAT.value or list(train_steps.BENCHMARKS)
            train_steps.run(_CONFIG.value, what, _BATCH.value, _STEPS.value, _SAMPLE_STEPS.value)
        else:
            raise app.UsageError(f"Name a benchmark ({', '.join(COMMANDS)}) or pass --config.")


if __name__ == "__main__":
    cli_errors.run(main, PROGRAM)
