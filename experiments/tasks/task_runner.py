"""What every task demo under `experiments/tasks/` does: train (or resume) its models through
the train CLI, score them through the evaluate CLI, record the machine, write `results.json`.

A demo's `run.py` imports this module (it sits beside the task folders), names its configs and
its metric, and draws its own figure. Workdirs go to `runs/tasks/<task>/<model>`: an existing
one resumes, a finished one is only sampled and scored. `--quick` trains the configs' `:tiny`
variants with XLA's optimiser off into a temporary folder: it checks the script, its numbers
mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import jax

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def cli(args: list[str], quick: bool) -> dict:
    """Runs `python -m <args>` from the repository root; returns its last stdout line as JSON.

    Raises:
      RuntimeError: the command failed (with the end of its stderr).
    """
    env = dict(os.environ)
    if quick:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FAST_XLA}".strip()
    proc = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train(
    config: pathlib.Path,
    workdir: pathlib.Path,
    quick: bool,
    first_stage: pathlib.Path | None = None,
) -> dict:
    """Trains (or resumes) one model; `first_stage`: a workdir whose first stage it borrows
    (stage 2 only). Returns the train CLI's JSON line with the wall seconds and the config."""
    spec = f"{config}{':tiny' if quick else ''}"
    args = ["ldm_jax.train", f"--config={spec}", f"--workdir={workdir}"]
    if first_stage is not None:
        args += ["--config.stage=ldm", f"--config.train.first_stage_workdir={first_stage}"]
    start = time.time()
    out = cli(args, quick)
    return {**out, "wall_s": round(time.time() - start, 1), "config": str(config.relative_to(ROOT))}


def evaluate(
    workdir: pathlib.Path, what: str, quick: bool, args: tuple[str, ...] = (), quick_args=()
) -> dict:
    """`python -m ldm_jax.evaluate --what <what>` on a workdir (`quick_args` replace `args`
    under --quick); its JSON with the wall seconds."""
    command = ["ldm_jax.evaluate", f"--workdir={workdir}", f"--what={what}"]
    command += list(quick_args if quick else args)
    start = time.time()
    out = cli(command, quick)
    return {**out, "wall_s": round(time.time() - start, 1)}


def machine() -> dict:
    """CPUs, JAX version, 1-minute load average and the XLA float32 matmul rate."""
    from ldm_jax.benchmarks.xla_measure import matmul_peak_flops

    return {
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "load_1min": round(os.getloadavg()[0], 2),
        "xla_matmul_gflops": round(matmul_peak_flops() / 1e9, 1),
    }


@dataclasses.dataclass
class Demo:
    """One demo run: where its workdirs and outputs go, and what it has measured so far."""

    task: str
    quick: bool
    runs: pathlib.Path
    out: pathlib.Path
    results: dict
    start: float

    def workdir(self, model: str) -> pathlib.Path:
        return self.runs / model

    def log(self, key: str, value: dict) -> None:
        """Records `value` under results[key] and prints it as one JSON line."""
        self.results[key] = value
        print(json.dumps({key: value}), flush=True)

    def finish(self) -> pathlib.Path:
        """Writes `results.json` (with the total seconds) into the output folder."""
        self.results["total_s"] = round(time.time() - self.start, 1)
        path = self.out / "results.json"
        path.write_text(json.dumps(self.results, indent=2) + "\n")
        print(json.dumps({"results": str(path), "total_s": self.results["total_s"]}))
        return path


def start(
    task: str, description: str, here: pathlib.Path, parser: argparse.ArgumentParser | None = None
) -> tuple[Demo, argparse.Namespace]:
    """Parses `--quick`, `--runs` and `--out` (besides the demo's own flags on `parser`), makes
    the folders, measures the machine; returns the demo and the parsed flags."""
    parser = parser or argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=":tiny configs, temporary output")
    parser.add_argument("--runs", default=None, help=f"workdir root (runs/tasks/{task})")
    parser.add_argument("--out", default=None, help="results folder (the script's folder)")
    args = parser.parse_args()
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"{task}_quick_")) if args.quick else None
    runs = pathlib.Path(args.runs or (scratch or ROOT / "runs" / "tasks") / task)
    out = pathlib.Path(args.out or scratch or here)
    out.mkdir(parents=True, exist_ok=True)
    results = {"task": task, "quick": args.quick, "machine": machine()}
    return Demo(task, args.quick, runs, out, results, time.time()), args
