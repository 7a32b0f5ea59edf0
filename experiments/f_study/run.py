"""The f study (the paper's Figs. 6-7) on this CPU: LDM-f for f = 1, 2, 4, 8, 16, matched FLOPs.

  python experiments/f_study/run.py [--phase train,score,report] [--datasets fashion_mnist,emoji]
      [--budget fashion_mnist=32,emoji=16] [--quick]

For each dataset and f (`configs/f_study/ldm.py:<dataset>,<f>`): the FLOPs of one train step
from XLA's cost analysis (`compute.py`), a step count from the dataset's FLOP budget (the budget
is given in LDM-1 steps: `--budget fashion_mnist=32` gives every model 32 LDM-1 steps' worth of
training FLOPs, capped at `--cap` times the LDM-4 step count, see the README), then
`python -m ldm_jax.train` (niced) with a checkpoint at each quarter of the run; the wall-clock
second of each checkpoint is its folder's modification time less the process start. `score`
rates every checkpoint (`score.py`), `report` writes `results.json`, the plots and the README
table. Results accumulate in `results.json` beside this script (a finished run is skipped).
First stages are the f sweep's (`runs/autoencoders/<dataset>_kl_f<f>`, trained by
`experiments/autoencoders/run.py --steps 300`; trained here with that script when missing).
`--quick` runs the `:tiny` configs for a few steps into a temporary folder (seconds per model).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "configs" / "f_study"))
sys.path.insert(0, str(HERE))

import ldm as study_config  # noqa: E402  (configs/f_study/ldm.py)

FACTORS = study_config.FACTORS
CONFIG = ROOT / "configs" / "f_study" / "ldm.py"
BATCH = 64
QUARTERS = 4  # checkpoints per run (evaluation points)
DEFAULT_BUDGET = {"fashion_mnist": 16, "emoji": 12}  # in LDM-1 train steps
DEFAULT_CAP = 1.0  # at most this many times the LDM-4 steps (see the README)
QUICK_STEPS = QUARTERS
PIXEL_SCORE_STRIDE = 2  # LDM-1 and -2, the costliest to sample: every other checkpoint


def _python(args: list[str], nice: bool = True) -> subprocess.CompletedProcess:
    command = (["nice", "-n", "5"] if nice else []) + [sys.executable, *args]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc


def ensure_first_stage(dataset: str, f: int) -> None:
    """Trains the f sweep's KL autoencoder when its workdir is missing (300 steps, as the sweep)."""
    if f == 1 or os.path.isdir(
        os.path.join(study_config.autoencoder_workdir(dataset, f), "checkpoints")
    ):
        return
    _python(
        [
            str(ROOT / "experiments" / "autoencoders" / "run.py"),
            "--steps=300",
            f"--datasets={dataset}",
            f"--members=kl_f{f}",
            f"--results={HERE / 'first_stages.json'}",
        ]
    )


def plan(
    datasets: list[str], budget: dict[str, float], cap: float, quick: bool, known: dict
) -> list[dict]:
    """Per (dataset, f): FLOPs per train step and the step count of the matched budget.

    `known` caches the FLOPs per step by "<dataset>_f<f>" (filled in here)."""
    import compute

    rows = []
    for dataset in datasets:
        flops = {}
        for f in FACTORS:
            key = f"{dataset}_f{f}"
            if key not in known:
                config = study_config.get_config(f"{dataset},{f}" + (",tiny" if quick else ""))
                known[key] = compute.train_step_flops(config, BATCH if not quick else 8)
            flops[f] = known[key]
        total = budget[dataset] * flops[1]
        steps4 = total / flops[4]
        for f in FACTORS:
            matched = total / flops[f]
            steps = QUICK_STEPS if quick else quarters(min(matched, cap * steps4))
            rows.append(
                {
                    "dataset": dataset,
                    "f": f,
                    "flops_per_step": flops[f],
                    "budget_flops": total,
                    "matched_steps": round(matched, 1),
                    "steps": steps,
                    "capped": bool(steps < round(matched)),
                    "train_flops": steps * flops[f],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def quarters(steps: float) -> int:
    """`steps` rounded to a multiple of QUARTERS (at least QUARTERS): a checkpoint each quarter."""
    return QUARTERS * max(1, round(steps / QUARTERS))


def train(row: dict, runs: pathlib.Path, quick: bool) -> dict:
    """Trains one model with a checkpoint at each quarter; returns its timings."""
    dataset, f, steps = row["dataset"], row["f"], row["steps"]
    if not quick:
        ensure_first_stage(dataset, f)
    workdir = runs / f"{dataset}_f{f}"
    arg = f"{dataset},{f}" + (",tiny" if quick else "")
    overrides = [
        f"--config.train.steps={steps}",
        f"--config.train.batch_size={BATCH if not quick else 8}",
        f"--config.train.warmup_steps={max(1, min(100, steps // 10))}",
        f"--config.train.keep_checkpoints={QUARTERS + 1}",
        f"--config.train.checkpoint_every={steps // QUARTERS}",
    ]
    start = time.time()
    load_before = os.getloadavg()[0]
    _python(["-m", "ldm_jax.train", f"--config={CONFIG}:{arg}", f"--workdir={workdir}", *overrides])
    train_s = time.time() - start
    ckpt_dir = workdir / "checkpoints" / "ldm"
    kept = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
    wall = {s: round((ckpt_dir / str(s)).stat().st_mtime - start, 1) for s in kept}
    return {
        **row,
        "workdir": str(workdir),
        "batch": BATCH if not quick else 8,
        "train_s": round(train_s, 1),
        "checkpoint_wall_s": {str(s): wall[s] for s in kept},
        "train_images_per_s": round(steps * (BATCH if not quick else 8) / train_s, 2),
        "load_1min_before": round(load_before, 2),
        "load_1min_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phase", default="train,score,report")
    parser.add_argument("--datasets", default="fashion_mnist,emoji")
    parser.add_argument("--budget", default=",".join(f"{k}={v}" for k, v in DEFAULT_BUDGET.items()))
    parser.add_argument("--cap", type=float, default=DEFAULT_CAP)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="f_study_quick_")) if args.quick else None
    runs = pathlib.Path(args.runs or (scratch / "runs" if scratch else ROOT / "runs" / "f_study"))
    out = pathlib.Path(args.out or scratch or HERE)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    phases = args.phase.split(",")
    datasets = [d for d in args.datasets.split(",") if d]
    budget = {k: float(v) for k, v in (kv.split("=") for kv in args.budget.split(","))}

    def save() -> None:
        path.write_text(json.dumps(results, indent=2) + "\n")

    if "machine" not in results:
        import jax

        from ldm_jax.benchmarks.xla_measure import matmul_peak_flops

        results["machine"] = {
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "load_1min": round(os.getloadavg()[0], 2),
            "xla_matmul_gflops": round(matmul_peak_flops() / 1e9, 1),
        }
        save()
    if "train" in phases:
        todo = [d for d in datasets if not all(f"{d}_f{f}" in results["runs"] for f in FACTORS)]
        known = results.setdefault("flops_per_step", {})
        for row in plan(todo, budget, args.cap, args.quick, known) if todo else []:
            key = f"{row['dataset']}_f{row['f']}"
            if key in results["runs"]:
                continue
            results["runs"][key] = train(row, runs, args.quick)
            print(json.dumps(results["runs"][key]), flush=True)
            save()
    if "score" in phases:  # into each workdir (another process may be writing results.json)
        for run in results["runs"].values():
            done = pathlib.Path(run["workdir"]) / "f_study_scores.json"
            if run["dataset"] in datasets and not done.exists():
                stride = PIXEL_SCORE_STRIDE if run["f"] <= 2 else 1
                _python(
                    [str(HERE / "score.py"), f"--workdir={run['workdir']}", f"--stride={stride}"]
                    + (["--quick"] if args.quick else [])
                )
                print(done.read_text(), flush=True)
    if "report" in phases:
        import report

        for run in results["runs"].values():
            done = pathlib.Path(run["workdir"]) / "f_study_scores.json"
            if done.exists():
                run["scores"] = json.loads(done.read_text())
        report.write(results, out, args.quick)
        save()


if __name__ == "__main__":
    main()
