"""The PyTorch/diffusers peer of `python -m ldm_jax.bench`; prints the same JSON fields.

  python -m ldm_jax.benchmarks.peers
      unet|unet_forward|unet_train|autoencoder|sample|attention|groupnorm
      [--preset sd_small_cpu|quickstart] [--batch 0] [--repeats 5] [--sample_steps 50]
      [--threads 0 (torch's default)]

Needs `pip install torch==2.13.0 diffusers==0.42.1` (not ldm_jax dependencies).
"""

from __future__ import annotations

import argparse

import torch

from ldm_jax.benchmarks.peers import torch_benches as tb
from ldm_jax.benchmarks.presets import get_preset
from ldm_jax.benchmarks.timing import emit

COMMANDS = ("unet", "unet_forward", "unet_train", "autoencoder", "sample", "attention", "groupnorm")


def run_command(command: str, preset_name: str, batch: int, repeats: int, sample_steps: int):
    """Runs one peer benchmark; returns (and prints) its JSON records."""
    if command not in COMMANDS:
        raise ValueError(f"Unknown benchmark {command!r}; choose from {COMMANDS}.")
    torch.manual_seed(0)
    if command == "attention":
        return [emit(r) for r in tb.bench_attention(repeats, batch)]
    if command == "groupnorm":
        return [emit(r) for r in tb.bench_groupnorm(repeats, batch)]
    preset = get_preset(preset_name, batch)
    results = []
    if command in ("unet", "unet_forward"):
        results.append(emit(tb.bench_unet_forward(preset, repeats)))
    if command in ("unet", "unet_train"):
        results.append(emit(tb.bench_unet_train(preset, repeats)))
    if results:
        return results
    if command == "sample":
        return [emit(tb.bench_sample(preset, repeats, sample_steps))]
    return [emit(tb.bench_autoencoder(preset, repeats))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ldm_jax.benchmarks.peers")
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--preset", default="sd_small_cpu")
    parser.add_argument("--batch", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sample_steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run_command(args.command, args.preset, args.batch, args.repeats, args.sample_steps)


if __name__ == "__main__":
    main()
