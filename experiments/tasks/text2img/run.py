"""Text-to-image on Noto emoji, trained on this CPU: the paper's jointly trained BERT and the
frozen MiniLM, sampled for fixed prompts and scored by caption retrieval on held-out captions.

  python experiments/tasks/text2img/run.py                 # both models (see README.md)
  python experiments/tasks/text2img/run.py --models bert   # one of them
  python experiments/tasks/text2img/run.py --quick         # the `:tiny` configs: checks the script

Steps, each a CLI run whose JSON line is kept:
  1. `python -m ldm_jax.train --config configs/tasks/emoji/text2img_bert.py` (stage 1, the KL f=4
     autoencoder, then the LDM); the MiniLM model trains only its LDM, on the BERT run's first
     stage (`--config.stage=ldm --config.train.first_stage_workdir=...`), so both see the same
     latents and differ only in tau_theta.
  2. `samples.png`: one row per prompt in PROMPTS, COLUMNS samples of each model side by side
     (BERT left, MiniLM right, a black column between), the same noise for both (the configs'
     sampler, steps and guidance).
  3. `python -m ldm_jax.evaluate --what text2img --candidates 10`: caption retrieval accuracy of
     one sample per held-out caption (chance 0.1), with the first-stage and nearest-training-
     caption references (`ldm_jax/evaluation/text2img.py`).
`results.json` holds the timings, the evaluation JSON of each model and the machine (CPUs, load
average, XLA float32 matmul rate). Workdirs go to `runs/tasks/text2img/<model>` (an existing one
resumes; a finished one is only sampled and scored). `--quick` trains the `:tiny` variants on
synthetic shapes with the XLA optimiser off and writes to a temporary folder (about 2.5 minutes
on 2 loaded cores, most of it compiling; the numbers mean nothing).
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

import jax
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CONFIGS = ROOT / "configs" / "tasks" / "emoji"
MODELS = ("bert", "minilm")
PROMPTS = (
    "red heart",
    "smiling face",
    "cat",
    "yellow star",
    "green apple",
    "fire",
    "snowman",
    "blue car",
)
COLUMNS = 4
CANDIDATES = 10
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _cli(args: list[str], quick: bool) -> dict:
    """Runs `python -m <args>` from the repository root; returns its last stdout line as JSON."""
    env = dict(os.environ)
    if quick:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FAST_XLA}".strip()
    proc = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train(model: str, workdir: pathlib.Path, first_stage: pathlib.Path | None, quick: bool):
    """Trains (or resumes) one model; returns the train CLI's timings and the wall seconds."""
    config = f"{CONFIGS / f'text2img_{model}.py'}{':tiny' if quick else ''}"
    args = ["ldm_jax.train", f"--config={config}", f"--workdir={workdir}"]
    if first_stage is not None:
        args += ["--config.stage=ldm", f"--config.train.first_stage_workdir={first_stage}"]
    start = time.time()
    out = _cli(args, quick)
    return {**out, "wall_s": round(time.time() - start, 1), "config": config}


def prompt_grid(workdirs: dict[str, pathlib.Path], path: pathlib.Path, quick: bool) -> None:
    """`samples.png`: a row per prompt, COLUMNS samples per model, models side by side."""
    from ldm_jax.evaluation.text2img import sample_captions
    from ldm_jax.sampling import images as image_grid
    from ldm_jax.workdir.reader import load_trained_ldm

    blocks = []
    for workdir in workdirs.values():
        trained = load_trained_ldm(str(workdir))
        s = trained.config.sample
        captions = [p for p in PROMPTS for _ in range(COLUMNS)]
        images = sample_captions(
            trained, captions, sampler=s.sampler, steps=2 if quick else s.steps,
            guidance=s.guidance_scale, eta=s.eta, seed=0, batch_size=len(captions),
        )  # fmt: skip
        blocks.append(images.reshape(len(PROMPTS), COLUMNS, *images.shape[1:]))
        blocks.append(-np.ones_like(blocks[-1][:, :1]))  # a black column between models
    rows = np.concatenate(blocks[:-1], axis=1)  # [prompts, models * (COLUMNS + 1) - 1, H, W, C]
    grid = image_grid.make_grid(rows.reshape(-1, *rows.shape[2:]), columns=rows.shape[1])
    image_grid.save_png(str(path), grid)


def evaluate(workdir: pathlib.Path, quick: bool) -> dict:
    """`evaluate --what text2img` (all held-out captions, K = CANDIDATES; tiny in --quick)."""
    args = ["ldm_jax.evaluate", f"--workdir={workdir}", "--what=text2img"]
    args += ["--num=8", "--candidates=4", "--steps=2"] if quick else [f"--candidates={CANDIDATES}"]
    start = time.time()
    out = _cli(args, quick)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="bert,minilm or one of them")
    parser.add_argument("--quick", action="store_true", help=":tiny configs, temporary output")
    parser.add_argument("--runs", default=None, help="workdir root (runs/tasks/text2img)")
    parser.add_argument("--out", default=None, help="results folder (this script's folder)")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(MODELS)
    if unknown or not models:
        parser.error(f"--models: use some of {MODELS}, got {args.models!r}")
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="t2i_quick_")) if args.quick else None
    runs = pathlib.Path(args.runs or (scratch or ROOT / "runs" / "tasks") / "text2img")
    out = pathlib.Path(args.out or scratch or HERE)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"quick": args.quick, "machine": machine(), "prompts": list(PROMPTS)}
    start = time.time()
    workdirs, first_stage = {}, None
    for model in models:
        workdirs[model] = runs / model
        row = {"train": train(model, workdirs[model], first_stage, args.quick)}
        first_stage = first_stage or workdirs[model]  # later models share this first stage
        results.setdefault("runs", {})[model] = row
        print(json.dumps({model: row["train"]}), flush=True)
    prompt_grid(workdirs, out / "samples.png", args.quick)
    results["grid"] = "samples.png"
    for model in models:
        results["runs"][model]["eval"] = evaluate(workdirs[model], args.quick)
        print(json.dumps({model: results["runs"][model]["eval"]}), flush=True)
    results["total_s"] = round(time.time() - start, 1)
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"results": str(path), "total_s": results["total_s"]}))


if __name__ == "__main__":
    main()
