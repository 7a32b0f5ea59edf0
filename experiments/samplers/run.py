"""Samplers: quality against steps for DDIM (eta 0 and 1), PLMS and DPM-Solver++(2M).

  python experiments/samplers/run.py [--train_steps 2200] [--per_class 20] [--steps 5,10,20,50]
      [--checkpoints 2200,<latest>] [--probe 1100] [--spread_seeds 1,2]
      [--trailing_steps 5,10,50] [--no_train] [--cached_only] [--quick]

Trains (or resumes; a finished run is a no-op) the quickstart config to `--train_steps` LDM
steps into `runs/samplers/model` (`quality.TRAIN_OVERRIDES`: a checkpoint every 1100, all kept),
then, at each checkpoint of `--checkpoints` (default: the quickstart's 2200 and the latest),
draws `--per_class` samples of every class with each sampler at each step count (guidance 2.0,
sampling seed 0) and scores them against the same real test images (`quality.Evaluator`).
`--probe` checkpoints (default: the others up to the last swept) get only DDIM eta=0 and
DPM-Solver++ at 10 and 50 steps: do the ODE samplers gain from more steps yet?
At each swept checkpoint DDIM eta=0 and DPM-Solver++ also run on the "trailing" timestep grid
(`--trailing_steps`), which starts every step count at t = T - 1; the library's default
"leading" grid starts fewer steps at lower t (801 for DDIM at 5 steps), which changes the
samples more than the step count does. `--spread_seeds` re-draws the default sampler (DDIM
50 steps, eta 1) at `--spread_checkpoint` (2200) with other sampling seeds, to show the
seed-to-seed noise of the figures. Writes `results.json` and `quality_vs_steps.png` beside this
script and prints the README's tables; samples go to `runs/samplers/points/*.npz`.
`--cached_only` gathers the points already scored without drawing any. `--quick` trains the
`:tiny` config into a temporary folder and scores two samples per class at 2 and 3 steps: it
checks the script, its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import line_plots  # noqa: E402
import quality  # noqa: E402

GUIDANCE = 2.0  # the quickstart's default
# (label, sampler, eta); the ODE samplers are DDIM eta 0, PLMS and DPM-Solver++(2M).
SAMPLERS = (
    ("DDIM eta=0", "ddim", 0.0),
    ("DDIM eta=1", "ddim", 1.0),
    ("PLMS", "plms", 0.0),
    ("DPM-Solver++(2M)", "dpmpp_2m", 0.0),
)
ODE = ("DDIM eta=0", "PLMS", "DPM-Solver++(2M)")
# Probed checkpoints: do more steps help the ODE samplers yet?
PROBE_SAMPLERS = ("ddim", "dpmpp_2m")
PROBE_STEPS = (10, 50)


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def _grid(p: dict) -> str:
    return p.get("spacing", "leading")


def table(points: list[dict], step: int, spacing: str = "leading") -> str:
    """Markdown table of one checkpoint's sweep on one timestep grid: rows sampler x steps."""
    rows = [
        "| sampler | steps | accuracy | mean diversity ratio | FD | FD / real baseline "
        "| sampling s |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, sampler, eta in SAMPLERS:
        for p in sorted(points, key=lambda p: p["steps"]):
            point = (p["step"], p["sampler"], p["eta"], p["seed"], _grid(p))
            if point == (step, sampler, eta, 0, spacing):
                rows.append(
                    f"| {label} | {p['steps']} | {p['accuracy']:.3f} | "
                    f"{p['mean_diversity_ratio']:.2f} | {p['fd']:.1f} | {p['fd_ratio']:.2f} | "
                    f"{p['sampling_s']} |"
                )
    return "\n".join(rows)


def series(points: list[dict], step: int, key: str, spacing: str = "leading") -> dict:
    """{sampler label: (steps, values)} of one checkpoint on one timestep grid."""
    out = {}
    for label, sampler, eta in SAMPLERS:
        chosen = sorted(
            (p["steps"], p[key])
            for p in points
            if (p["step"], p["sampler"], p["eta"], p["seed"], _grid(p))
            == (step, sampler, eta, 0, spacing)
        )
        if chosen:
            out[label] = ([s for s, _ in chosen], [v for _, v in chosen])
    return out


def ode_trend(points: list[dict], step: int, spacing: str = "leading") -> dict:
    """Per ODE sampler at one checkpoint and grid: FD at the fewest and most steps scored."""
    trend = {}
    for label, xs_ys in series(points, step, "fd", spacing).items():
        if label in ODE:
            xs, ys = xs_ys
            trend[label] = {
                "fd_fewest_steps": [xs[0], round(ys[0], 2)],
                "fd_most_steps": [xs[-1], round(ys[-1], 2)],
                "best_steps": xs[ys.index(min(ys))],
                "improves_with_steps": ys[-1] < ys[0],
            }
    return trend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per_class", type=int, default=20)
    parser.add_argument("--steps", default="5,10,20,50", help="sampler step counts")
    parser.add_argument("--checkpoints", default="", help="LDM steps (default 2200,<latest>)")
    parser.add_argument("--spread_seeds", default="1,2", help="extra seeds of the default point")
    parser.add_argument(
        "--spread_checkpoint", type=int, default=quality.QUICKSTART_STEP, help="LDM step"
    )
    parser.add_argument(
        "--trailing_steps",
        default="5,10,50",
        help="step counts of DDIM eta=0 and DPM-Solver++ on the trailing grid (at every "
        "swept checkpoint)",
    )
    parser.add_argument(
        "--probe",
        default="",
        help="LDM steps scored only with DDIM eta=0 and DPM-Solver++ at 10 and 50 steps "
        "(default: every other checkpoint up to the last swept one)",
    )
    parser.add_argument("--train_steps", type=int, default=quality.TRAIN_STEPS, help="LDM steps")
    parser.add_argument("--no_train", action="store_true", help="score existing checkpoints")
    parser.add_argument(
        "--cached_only", action="store_true", help="report the points already scored, draw none"
    )
    parser.add_argument("--quick", action="store_true", help=":tiny config, temporary output")
    args = parser.parse_args()
    start = time.time()

    scratch = pathlib.Path(tempfile.mkdtemp(prefix="samplers_quick_")) if args.quick else None
    workdir = scratch / "model" if scratch else quality.WORKDIR
    out = scratch or HERE
    points_dir = (scratch or quality.ROOT / "runs" / "samplers") / "points"
    if args.quick:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {quality.FAST_XLA}"
    quality.use_compilation_cache((scratch or quality.ROOT / "runs" / "samplers") / "xla_cache")
    results: dict = {"experiment": "samplers", "quick": args.quick, "machine": quality.machine()}
    if not args.no_train:
        results["train"] = quality.train(workdir, args.quick, args.train_steps)
    available = quality.checkpoint_steps(workdir)
    results["model"] = {
        "workdir": str(workdir),
        "config": "configs/quickstart.py" + (":tiny" if args.quick else ""),
        "overrides": [f"--config.train.steps={args.train_steps}", *quality.TRAIN_OVERRIDES],
        "checkpoint_wall_s": quality.checkpoint_times(workdir),
    }
    default = [quality.QUICKSTART_STEP, available[-1]] if not args.quick else available[-2:]
    checkpoints = _ints(args.checkpoints) or sorted(set(default))
    steps = [2, 3] if args.quick else _ints(args.steps)
    per_class = 2 if args.quick else args.per_class
    evaluator = quality.Evaluator(workdir, points_dir, per_class)
    results["protocol"] = {
        "per_class": per_class,
        "num_samples": per_class * 10,
        "guidance": GUIDANCE,
        "sampling_seed": 0,
        "reference_seed": 0,
        "reference": "class-matched real test images, the same for every point",
        "classifier_test_accuracy": evaluator.classifier_meta["test_accuracy"],
    }

    points: list[dict] = []
    results["points"] = points
    plan = [
        quality.Point(ckpt, sampler, n, eta, GUIDANCE)
        for ckpt in checkpoints
        for n in steps  # in the order given: put the most wanted step counts first
        for _, sampler, eta in SAMPLERS
    ]
    seeds = [] if args.quick else _ints(args.spread_seeds)
    spread_at = checkpoints[0] if args.quick else args.spread_checkpoint
    spread = [quality.Point(spread_at, "ddim", 50, 1.0, GUIDANCE, s) for s in seeds]
    # DDIM eta=0 and DPM-Solver++ on the "trailing" grid, which starts every count at t = T - 1
    # ("leading" starts n steps at t = (n - 1) * (T // n) + 1, e.g. 801 for DDIM at 5 steps).
    trailing = [
        quality.Point(c, sampler, n, 0.0, GUIDANCE, spacing="trailing")
        for c in checkpoints
        for sampler in PROBE_SAMPLERS
        for n in (steps if args.quick else _ints(args.trailing_steps))
    ]
    others = [c for c in available if c not in checkpoints and c <= checkpoints[-1]]
    probe_at = _ints(args.probe) or others
    probe = [
        quality.Point(c, sampler, n, 0.0, GUIDANCE)
        for c in probe_at
        for sampler in PROBE_SAMPLERS
        for n in (PROBE_STEPS if not args.quick else steps)
    ]
    for point in plan + probe + spread + trailing:
        result = evaluator.score(point, args.cached_only)
        if result is None:
            results.setdefault("not_scored", []).append(point.name)
            continue
        points.append(result)
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    panels = [
        (f"LDM step {c}", "sampler steps", "FD (classifier features)", series(points, c, "fd"))
        for c in checkpoints
    ]
    first = checkpoints[0]  # the full sweep; later checkpoints may hold fewer step counts
    panels += [
        (
            f"LDM step {checkpoints[-1]}, trailing grid",
            "sampler steps",
            "FD (classifier features)",
            series(points, checkpoints[-1], "fd", "trailing"),
        ),
        (f"LDM step {first}", "sampler steps", "accuracy", series(points, first, "accuracy")),
        (
            f"LDM step {first}",
            "sampler steps",
            "mean diversity ratio",
            series(points, first, "mean_diversity_ratio"),
        ),
    ]
    line_plots.draw_panels(
        str(out / "quality_vs_steps.png"),
        panels,
        log_x=False,  # draw_panels' log axis labels minor ticks that overlap at 5-100
        suptitle=f"{per_class * 10} samples, guidance {GUIDANCE}, seed 0",
    )
    results["ode_trend_trailing"] = {str(c): ode_trend(points, c, "trailing") for c in checkpoints}
    results["ode_trend"] = {
        str(c): ode_trend(points, c) for c in sorted(set(checkpoints) | set(probe_at))
    }
    # Sampling seconds summed over the points, whichever run drew them (total_s is this run's).
    results["points_sampling_s"] = round(sum(p["sampling_s"] for p in points), 1)
    results["total_s"] = round(time.time() - start, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    for c in sorted(set(checkpoints) | set(probe_at)):
        print(f"\nLDM step {c}\n{table(points, c)}")
    for c in checkpoints:
        print(f"\nTrailing grid, LDM step {c}\n{table(points, c, 'trailing')}")
    print(f"\nSeed spread (DDIM eta=1, 50 steps, LDM step {spread_at})")
    for p in points:
        point = (p["step"], p["sampler"], p["steps"], p["eta"], _grid(p))
        if point == (spread_at, "ddim", 50, 1.0, "leading"):
            print(
                f"| {p['seed']} | {p['accuracy']:.3f} | {p['mean_diversity_ratio']:.2f} | "
                f"{p['fd']:.1f} | {p['fd_ratio']:.2f} |"
            )
    print(json.dumps({"results": str(out / "results.json"), "total_s": results["total_s"]}))


if __name__ == "__main__":
    main()
