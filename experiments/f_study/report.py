"""The f study's outputs from `results.json`: per-dataset plots, sample grids, the README table."""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import line_plots  # noqa: E402  (experiments/line_plots.py)

LABELS = {1: "LDM-1 (pixels)", 2: "LDM-2", 4: "LDM-4", 8: "LDM-8", 16: "LDM-16"}


def model_facts(dataset: str, f: int, quick: bool = False) -> dict[str, Any]:
    """Latent shape and denoiser parameter count of the study's config (`quick`: its tiny one)."""
    import jax
    import ldm as study_config  # configs/f_study/ldm.py, on the path set by run.py

    from ldm_jax.config import builders
    from ldm_jax.config.defaults import with_defaults

    config = with_defaults(study_config.get_config(f"{dataset},{f}" + (",tiny" if quick else "")))
    abstract = builders.abstract_denoiser_params(config)
    params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(abstract))
    return {"latent_shape": list(builders.latent_shape(config)), "params": params}


def curve(run: dict, metric: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """(steps, training GFLOPs, wall s, metric) at each scored checkpoint of a run."""
    scores = run.get("scores") or {}
    steps = sorted(int(s) for s in scores)
    flops = [s * run["flops_per_step"] / 1e9 for s in steps]
    wall = [run["checkpoint_wall_s"][str(s)] for s in steps]
    return steps, flops, wall, [scores[str(s)][metric] for s in steps]


def plot(results: dict, dataset: str, metric: str, label: str, path: pathlib.Path) -> str:
    """One PNG: `metric` against steps, training FLOPs and wall-clock seconds, a line per f."""
    runs = [r for r in results["runs"].values() if r["dataset"] == dataset and r.get("scores")]
    runs.sort(key=lambda r: r["f"])
    by = {"steps": {}, "flops": {}, "wall": {}}
    for r in runs:
        steps, flops, wall, ys = curve(r, metric)
        name = LABELS[r["f"]]
        by["steps"][name], by["flops"][name], by["wall"][name] = (
            (steps, ys),
            (flops, ys),
            (wall, ys),
        )
    line_plots.draw_panels(
        str(path),
        [
            (f"{label} vs training steps", "steps (batch 64)", label, by["steps"]),
            (f"{label} vs training compute", "training GFLOPs (XLA)", label, by["flops"]),
            (f"{label} vs wall-clock", "seconds since the run started", label, by["wall"]),
        ],
        log_x=True,
        suptitle=f"f study, {dataset}",
    )
    return str(path)


def sample_grid(results: dict, dataset: str, path: pathlib.Path) -> str | None:
    """Final-checkpoint samples, one row per f (the `f_study_samples.npy` that score.py keeps)."""
    from ldm_jax.sampling import images as image_grid

    rows = []
    for r in sorted(results["runs"].values(), key=lambda r: r["f"]):
        file = pathlib.Path(r["workdir"]) / "f_study_samples.npy"
        if r["dataset"] == dataset and file.exists():
            rows.append(np.load(file))
    if not rows:
        return None
    n = min(len(x) for x in rows)
    grid = image_grid.make_grid(np.concatenate([x[:n] for x in rows]), columns=n)
    return image_grid.save_png(str(path), grid)


def steady(run: dict) -> tuple[float, float]:
    """(images/s between the first and the last checkpoint, start-up seconds): the start-up is
    the first checkpoint's second less one quarter's steady time (compilation, the latent
    cache's encoding, data loading)."""
    wall = {int(k): v for k, v in run["checkpoint_wall_s"].items()}
    first, last = min(wall), max(wall)
    if last == first:
        return run["train_images_per_s"], 0.0
    per_step = (wall[last] - wall[first]) / (last - first)
    return run["batch"] / per_step, wall[first] - first * per_step


def table(results: dict, dataset: str) -> str:
    """The README table of one dataset: scores at the checkpoint of the matched FLOP budget (the
    last one, except for a run trained past it); images/s between checkpoints (steady state)."""
    head = (
        "| f | latent | params | steps | train GFLOPs | train s | start-up s | images/s | "
        "scored step | FD | FD ratio | accuracy |\n" + "|---" * 12 + "|"
    )
    lines = [head]
    for r in sorted(results["runs"].values(), key=lambda r: r["f"]):
        if r["dataset"] != dataset:
            continue
        scores = r.get("scores") or {}
        # the checkpoint nearest the matched FLOP budget (the last one, unless trained past it)
        at = min(
            (int(k) for k in scores),
            key=lambda k: abs(np.log(k * r["flops_per_step"] / r["budget_flops"])),
            default=r["steps"],
        )
        last = scores.get(str(at), {})
        ips, startup = steady(r)
        shape = "x".join(str(v) for v in r["latent_shape"])
        acc = f"{last['accuracy']:.2f}" if "accuracy" in last else "-"
        fd = f"{last['fd']:.4g}" if last else "-"
        ratio = f"{last['fd_ratio']:.2f}" if last else "-"
        cap = " (capped)" if r["capped"] else ""
        lines.append(
            f"| {r['f']} | {shape} | {r['params'] / 1e6:.2f}M | {r['steps']}{cap} | "
            f"{r['train_flops'] / 1e9:.0f} | {r['train_s']:.0f} | {startup:.0f} | {ips:.1f} | "
            f"{at} | {fd} | {ratio} | {acc} |"
        )
    return "\n".join(lines)


def write(results: dict, out: pathlib.Path, quick: bool = False) -> None:
    """Adds the model facts to `results`, draws every PNG and writes `table.md`."""
    for r in results["runs"].values():
        if "params" not in r:
            r.update(model_facts(r["dataset"], r["f"], quick))
    parts = []
    for dataset in sorted({r["dataset"] for r in results["runs"].values()}):
        plot(results, dataset, "fd_ratio", "FD / real-vs-real FD", out / f"{dataset}_fd.png")
        scored = [
            r["scores"]
            for r in results["runs"].values()
            if r.get("scores") and r["dataset"] == dataset
        ]
        if any("accuracy" in v for s in scored for v in s.values()):
            plot(results, dataset, "accuracy", "class accuracy", out / f"{dataset}_accuracy.png")
        sample_grid(results, dataset, out / f"samples_{dataset}.png")
        parts.append(f"### {dataset}\n\n{table(results, dataset)}\n")
    (out / "table.md").write_text("\n".join(parts))
    print("\n".join(parts))
