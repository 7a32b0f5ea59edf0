"""The f sweep of first stages on this CPU: train, score and draw every autoencoder config.

  python experiments/autoencoders/run.py [--steps 300] [--datasets fashion_mnist,emoji]
      [--members kl_f4,vq_f8] [--ablation] [--runs runs/autoencoders]

For each dataset and member (`configs/autoencoders/<dataset>/<member>.py`) it trains with
`python -m ldm_jax.train` (the config's own loss: L1 + LPIPS-VGG + PatchGAN from half-way),
scores the held-out split with `python -m ldm_jax.evaluate --what reconstruction` and records the
wall-clock times. `--ablation` trains the Fashion-MNIST f=4 KL autoencoder three ways at equal
steps, as the paper schedules its loss (the PatchGAN joins an autoencoder already trained with
L1 + LPIPS): a shared L1 + LPIPS prefix of half the steps, then one branch continues without and
one with the PatchGAN; a third run uses L1 only throughout. Results accumulate in `results.json`
beside this script (a run already there is skipped, so an interrupted sweep continues);
`reconstructions_<dataset>.png` shows the same test images (top row) reconstructed by every
member (one row each, in order).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import jax
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MEMBERS = ("kl_f2", "kl_f4", "kl_f8", "kl_f16", "vq_f4", "vq_f8")
DATASETS = {"fashion_mnist": "fashion_mnist", "emoji": "noto_emoji"}
L1_ONLY = (
    "--config.autoencoder_train.loss.perceptual_weight=0.0",
    "--config.autoencoder_train.loss.disc_weight=0.0",
)
NEVER = 10**9  # a disc_start no run reaches: the PatchGAN is built (same state) but never on
PAPER_LOSS = "L1+LPIPS+GAN"
GRID_IMAGES = 8
EVAL_IMAGES = 1000  # held-out images scored per member (the first of the test split)


def _run(args: list[str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def _train(
    config: pathlib.Path,
    workdir: pathlib.Path,
    steps: int,
    disc_start: int,
    extra: tuple[str, ...] = (),
) -> float:
    """Trains (or continues) one run to `steps`; returns the wall-clock seconds."""
    start = time.time()
    _run(
        [
            "ldm_jax.train",
            f"--config={config}",
            f"--workdir={workdir}",
            f"--config.autoencoder_train.steps={steps}",
            f"--config.autoencoder_train.checkpoint_every={max(steps // 2, 1)}",
            f"--config.autoencoder_train.loss.disc_start={disc_start}",
            *extra,
        ]
    )
    return time.time() - start


def _score(workdir: pathlib.Path) -> tuple[dict, float]:
    """`evaluate --what reconstruction` on the first EVAL_IMAGES test images; (scores, seconds)."""
    start = time.time()
    out = _run(
        [
            "ldm_jax.evaluate",
            f"--workdir={workdir}",
            "--what=reconstruction",
            f"--num={EVAL_IMAGES}",
        ]
    )
    return json.loads(out.strip().splitlines()[-1]), time.time() - start


def _row(
    name: str,
    dataset: str,
    member: str,
    loss: str,
    steps: int,
    train_s: float,
    workdir: pathlib.Path,
    **extra,
) -> dict:
    scores, evaluate_s = _score(workdir)
    return {
        "name": name,
        "dataset": dataset,
        "member": member,
        "loss": loss,
        "steps": steps,
        "train_s": round(train_s, 1),
        "evaluate_s": round(evaluate_s, 1),
        "workdir": str(workdir),
        **extra,
        **scores,
    }


def _config(dataset: str, member: str) -> pathlib.Path:
    return ROOT / "configs" / "autoencoders" / dataset / f"{member}.py"


def train_and_score(dataset: str, member: str, steps: int, runs: pathlib.Path) -> dict:
    """Trains one sweep member with the paper's loss (PatchGAN from half-way) and scores it."""
    name = f"{dataset}/{member}"
    workdir = runs / name.replace("/", "_")
    train_s = _train(_config(dataset, member), workdir, steps, steps // 2)
    return _row(name, dataset, member, PAPER_LOSS, steps, train_s, workdir)


def _slug(loss: str) -> str:
    return loss.replace("+", "_").replace(" (", "_").replace(")", "").replace(" ", "_")


def ablation(steps: int, runs: pathlib.Path, done: set[str], disc_norm: str) -> Iterator[dict]:
    """The f=4 KL Fashion-MNIST autoencoder with L1 only, L1+LPIPS and L1+LPIPS+GAN at `steps`.

    The two LPIPS arms share their first `steps // 2` steps (L1 + LPIPS, the discriminator not
    yet on), copied to two workdirs that continue to `steps`: one never switches the PatchGAN
    on, the other switches it on at `steps // 2`. Their train_s counts the shared prefix in full.
    `disc_norm` ("batch" | "actnorm") is the PatchGAN's normalisation (the GAN arm's name says
    which).
    """
    dataset, member = "fashion_mnist", "kl_f4"
    config = _config(dataset, member)
    norm = (f"--config.autoencoder_train.loss.disc_norm={disc_norm}",)
    base = runs / f"ablation_{dataset}_{member}_{steps}"
    arms = ((f"{PAPER_LOSS} ({disc_norm} D)", steps // 2), ("L1+LPIPS", NEVER))
    arms = tuple((loss, start) for loss, start in arms if f"ablation/{loss}" not in done)
    if arms:
        prefix = base / f"prefix_{disc_norm}"
        timing = prefix / "train_s.txt"
        if not timing.exists():
            timing.parent.mkdir(parents=True, exist_ok=True)
            seconds = _train(config, prefix, steps // 2, steps // 2, norm)
            timing.write_text(f"{seconds:.1f}\n")
        prefix_s = float(timing.read_text())
        for loss, disc_start in arms:
            workdir = base / _slug(loss)
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.copytree(prefix, workdir)
            train_s = prefix_s + _train(config, workdir, steps, disc_start, norm)
            yield _row(
                f"ablation/{loss}",
                dataset,
                member,
                loss,
                steps,
                train_s,
                workdir,
                prefix_steps=steps // 2,
            )
    if "ablation/L1" not in done:
        workdir = base / "L1"
        train_s = _train(config, workdir, steps, NEVER, L1_ONLY)
        yield _row("ablation/L1", dataset, member, "L1", steps, train_s, workdir)


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


def markdown_table(results: dict, ablation: bool = False) -> str:
    """A README table of `results.json`: one row per sweep member, or per ablation arm."""
    lines = [
        "| dataset | member | loss | steps | PSNR dB | SSIM | LPIPS-VGG | FD | features | "
        "codebook usage | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        if r["name"].startswith("ablation/") != ablation:
            continue
        usage = f"{r['codebook_usage']:.2f}" if "codebook_usage" in r else "-"
        lines.append(
            f"| {r['dataset']} | {r['member']} | {r['loss']} | {r['steps']} | {r['psnr_db']:.2f} | "
            f"{r['ssim']:.3f} | {r['lpips_vgg16']:.3f} | {r['fd']:.4g} | {r['fd_features']} | "
            f"{usage} | {r['train_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--members", default=",".join(MEMBERS))
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--disc_norm", default="actnorm", choices=("batch", "actnorm"))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "autoencoders"))
    parser.add_argument("--results", default=str(HERE / "results.json"))
    parser.add_argument("--table", action="store_true", help="print the README table and exit")
    args = parser.parse_args()
    runs = pathlib.Path(args.runs)
    path = pathlib.Path(args.results)
    results = json.loads(path.read_text()) if path.exists() else {"runs": []}
    if args.table:
        print(markdown_table(results))
        print()
        print(markdown_table(results, ablation=True))
        return
    done = {row["name"] for row in results["runs"]}

    def record(row: dict) -> None:
        results["runs"].append(row)
        results["machine"] = {"cpus": os.cpu_count(), "jax": jax.__version__}
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(row), flush=True)

    if args.ablation:
        for row in ablation(args.steps, runs, done, args.disc_norm):
            record(row)
    datasets = [d for d in args.datasets.split(",") if d]
    for dataset in datasets:
        for member in [m for m in args.members.split(",") if m]:
            if f"{dataset}/{member}" not in done:
                record(train_and_score(dataset, member, args.steps, runs))
    for dataset in datasets:
        rows = [r for r in results["runs"] if r["name"].startswith(f"{dataset}/")]
        order = {m: i for i, m in enumerate(MEMBERS)}
        rows.sort(key=lambda r: order.get(r["member"], len(order)))
        if rows:
            print(reconstruction_grid(dataset, rows))


if __name__ == "__main__":
    main()
