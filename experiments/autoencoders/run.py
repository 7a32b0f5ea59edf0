"""The f sweep of first stages on this CPU: train, score and draw every autoencoder config.

  python experiments/autoencoders/run.py [--steps 300] [--datasets fashion_mnist,emoji]
      [--members kl_f4,vq_f8] [--ablation] [--runs runs/autoencoders]

For each dataset and member (`configs/autoencoders/<dataset>/<member>.py`) it trains with
`python -m ldm_jax.train` (the config's own loss: L1 + LPIPS-VGG + PatchGAN from half-way),
scores the held-out split with `python -m ldm_jax.evaluate --what reconstruction` and records the
wall-clock times. `--ablation` adds the Fashion-MNIST f=4 KL autoencoder trained without LPIPS
and the PatchGAN at equal steps. Results accumulate in `results.json` beside this script (a
member already there is skipped, so an interrupted sweep continues); `reconstructions_<dataset>.png`
shows the same test images (top row) reconstructed by every member (one row each, in order).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MEMBERS = ("kl_f2", "kl_f4", "kl_f8", "kl_f16", "vq_f4", "vq_f8")
DATASETS = {"fashion_mnist": "fashion_mnist", "emoji": "noto_emoji"}
NO_GAN = (
    "--config.autoencoder_train.loss.perceptual_weight=0.0",
    "--config.autoencoder_train.loss.disc_weight=0.0",
)
GRID_IMAGES = 8
EVAL_IMAGES = 1000  # held-out images scored per member (the first of the test split)


def _run(args: list[str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def train_and_score(
    dataset: str, member: str, steps: int, runs: pathlib.Path, extra: tuple[str, ...] = ()
) -> dict:
    """Trains one member, evaluates its reconstructions; returns the result row."""
    name = f"{dataset}/{member}" + ("_no_lpips_gan" if extra else "")
    workdir = runs / name.replace("/", "_")
    config = ROOT / "configs" / "autoencoders" / dataset / f"{member}.py"
    start = time.time()
    _run(
        [
            "ldm_jax.train",
            f"--config={config}",
            f"--workdir={workdir}",
            f"--config.autoencoder_train.steps={steps}",
            f"--config.autoencoder_train.loss.disc_start={steps // 2}",
            *extra,
        ]
    )
    train_s = time.time() - start
    start = time.time()
    out = _run(
        [
            "ldm_jax.evaluate",
            f"--workdir={workdir}",
            "--what=reconstruction",
            f"--num={EVAL_IMAGES}",
        ]
    )
    scores = json.loads(out.strip().splitlines()[-1])
    return {
        "name": name,
        "dataset": dataset,
        "member": member,
        "paper_loss": not extra,
        "steps": steps,
        "train_s": round(train_s, 1),
        "evaluate_s": round(time.time() - start, 1),
        "workdir": str(workdir),
        **scores,
    }


def reconstruction_grid(dataset: str, rows: list[dict]) -> str:
    """Saves `reconstructions_<dataset>.png`: test images, then each member's reconstructions."""
    from ldm_jax.config import builders
    from ldm_jax.data import datasets, pipeline
    from ldm_jax.sampling import images as image_grid
    from ldm_jax.workdir.reader import load_config, load_first_stage_params

    first = load_config(rows[0]["workdir"])
    source = datasets.get_data_source(
        first.data.name, "test", first.data.get("data_dir") or None, image_size=32
    )
    real = pipeline.load_split_dict(
        source, first.data.image_size, first.data.channels, max_examples=GRID_IMAGES
    )["image"]
    lines = [real]
    for row in rows:
        config = load_config(row["workdir"])
        ae = builders.build_autoencoder(config)
        params = load_first_stage_params(row["workdir"], config)
        x_rec = jax.jit(lambda p, x, ae=ae: ae.apply({"params": p}, x)[0])(params, real)
        lines.append(np.clip(np.asarray(x_rec), -1, 1))
    grid = image_grid.make_grid(np.concatenate(lines), columns=GRID_IMAGES)
    return image_grid.save_png(str(HERE / f"reconstructions_{dataset}.png"), grid)


def markdown_table(results: dict) -> str:
    """The README table of `results.json`: one row per member."""
    lines = [
        "| dataset | member | loss | steps | PSNR dB | SSIM | LPIPS-VGG | FD | features | "
        "codebook usage | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        usage = f"{r['codebook_usage']:.2f}" if "codebook_usage" in r else "-"
        loss = "L1+LPIPS+GAN" if r["paper_loss"] else "L1 only"
        lines.append(
            f"| {r['dataset']} | {r['member']} | {loss} | {r['steps']} | {r['psnr_db']:.2f} | "
            f"{r['ssim']:.3f} | {r['lpips_vgg16']:.3f} | {r['fd']:.2f} | {r['fd_features']} | "
            f"{usage} | {r['train_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--members", default=",".join(MEMBERS))
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "autoencoders"))
    parser.add_argument("--results", default=str(HERE / "results.json"))
    parser.add_argument("--table", action="store_true", help="print the README table and exit")
    args = parser.parse_args()
    runs = pathlib.Path(args.runs)
    path = pathlib.Path(args.results)
    results = json.loads(path.read_text()) if path.exists() else {"runs": []}
    if args.table:
        print(markdown_table(results))
        return
    done = {row["name"] for row in results["runs"]}
    jobs = [(d, m, ()) for d in args.datasets.split(",") for m in args.members.split(",")]
    if args.ablation:
        jobs.append(("fashion_mnist", "kl_f4", NO_GAN))
    for dataset, member, extra in jobs:
        name = f"{dataset}/{member}" + ("_no_lpips_gan" if extra else "")
        if name in done:
            continue
        row = train_and_score(dataset, member, args.steps, runs, extra)
        results["runs"].append(row)
        results["machine"] = {"cpus": os.cpu_count(), "jax": jax.__version__}
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(row), flush=True)
    for dataset in args.datasets.split(","):
        rows = [r for r in results["runs"] if r["dataset"] == dataset and r["paper_loss"]]
        order = {m: i for i, m in enumerate(MEMBERS)}
        rows.sort(key=lambda r: order.get(r["member"], len(order)))
        if rows:
            print(reconstruction_grid(dataset, rows))


if __name__ == "__main__":
    main()
