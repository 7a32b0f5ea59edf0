"""Guidance: FD, accuracy and diversity against the classifier-free guidance scale.

  python experiments/guidance/run.py [--scales 2,1,4,8,1.5,3,6] [--checkpoints 2200,3300]
      [--per_class 20] [--cached_only] [--quick]

Scores the model of `experiments/samplers/run.py` (`runs/samplers/model`, trained by that script;
this one only reads it) at LDM checkpoints (default 2200, the quickstart's training length)
with the quickstart's default sampler (DDIM, 50 steps, eta 1), sampling seed 0, at each guidance
scale (1 = no guidance): class accuracy, mean per-class diversity ratio, Frechet distance in the
classifier's features against the same real test images for every scale, and its ratio to the
real-vs-real baseline (`experiments/samplers/quality.py`). Writes `results.json` and
`guidance_tradeoff.png` beside this script and prints the README's table; samples go to
`runs/samplers/points/*.npz` (the point cache both scripts share, so the scale-2 point is the
samplers sweep's default point). `--quick` trains the `:tiny` config into a temporary folder and
scores two samples per class at two scales with 3 steps: it checks the script, its numbers mean
nothing.
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
sys.path.insert(0, str(HERE.parent / "samplers"))

import line_plots  # noqa: E402
import quality  # noqa: E402

SAMPLER, STEPS, ETA = "ddim", 50, 1.0  # the quickstart's default sampler


def table(points: list[dict]) -> str:
    """Markdown table, one row per guidance scale."""
    rows = [
        "| guidance | accuracy | mean diversity ratio | min class diversity | FD | FD / real "
        "baseline | sampling s |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in sorted(points, key=lambda p: p["guidance"]):
        low = min(d for d in p["per_class_diversity_ratio"] if d is not None)
        rows.append(
            f"| {p['guidance']:g} | {p['accuracy']:.3f} | {p['mean_diversity_ratio']:.2f} | "
            f"{low:.2f} | {p['fd']:.1f} | {p['fd_ratio']:.2f} | {p['sampling_s']} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="2,1,4,8,1.5,3,6", help="guidance scales (run order)")
    parser.add_argument("--checkpoints", default="2200", help="LDM steps, one curve each")
    parser.add_argument("--per_class", type=int, default=20)
    parser.add_argument(
        "--cached_only", action="store_true", help="report the scales already scored, draw none"
    )
    parser.add_argument("--quick", action="store_true", help=":tiny config, temporary output")
    args = parser.parse_args()
    start = time.time()

    scratch = pathlib.Path(tempfile.mkdtemp(prefix="guidance_quick_")) if args.quick else None
    runs = scratch or quality.ROOT / "runs" / "samplers"
    out = scratch or HERE
    if args.quick:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {quality.FAST_XLA}"
    quality.use_compilation_cache(runs / "xla_cache")
    results: dict = {"experiment": "guidance", "quick": args.quick, "machine": quality.machine()}
    workdir = scratch / "model" if scratch else quality.WORKDIR
    if args.quick:
        results["train"] = quality.train(workdir, quick=True)
    available = quality.checkpoint_steps(workdir)
    checkpoints = available[-1:] if args.quick else [int(c) for c in args.checkpoints.split(",")]
    scales = [1.0, 4.0] if args.quick else [float(s) for s in args.scales.split(",")]
    steps = 3 if args.quick else STEPS
    per_class = 2 if args.quick else args.per_class
    evaluator = quality.Evaluator(workdir, runs / "points", per_class)
    results["model"] = {
        "workdir": str(workdir),
        "ldm_steps": checkpoints,
        "trained_by": "experiments/samplers/run.py",
        "checkpoint_wall_s": quality.checkpoint_times(workdir),
    }
    results["protocol"] = {
        "sampler": SAMPLER,
        "steps": steps,
        "eta": ETA,
        "per_class": per_class,
        "num_samples": per_class * 10,
        "sampling_seed": 0,
        "reference_seed": 0,
        "reference": "class-matched real test images, the same for every scale",
        "classifier_test_accuracy": evaluator.classifier_meta["test_accuracy"],
    }
    points: list[dict] = []
    results["points"] = points
    for point in [
        quality.Point(c, SAMPLER, steps, ETA, scale) for c in checkpoints for scale in scales
    ]:
        result = evaluator.score(point, args.cached_only)
        if result is None:
            results.setdefault("not_scored", []).append(point.name)
            continue
        points.append(result)
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    curves = {
        c: sorted((p for p in points if p["step"] == c), key=lambda p: p["guidance"])
        for c in checkpoints
    }

    def lines(key: str, x_key: str = "guidance") -> dict:
        return {
            f"LDM step {c}": ([p[x_key] for p in ps], [p[key] for p in ps])
            for c, ps in curves.items()
        }

    fd_lines = lines("fd")
    ps = curves[checkpoints[0]]
    fd_lines["real vs real"] = ([p["guidance"] for p in ps], [p["fd_real_baseline"] for p in ps])
    line_plots.draw_panels(
        str(out / "guidance_tradeoff.png"),
        [
            ("Frechet distance", "guidance scale", "FD", fd_lines),
            ("class accuracy", "guidance scale", "accuracy", lines("accuracy")),
            ("diversity", "guidance scale", "mean diversity ratio", lines("mean_diversity_ratio")),
            ("FD against accuracy, one point per scale", "accuracy", "FD", lines("fd", "accuracy")),
        ],
        suptitle=f"{SAMPLER} {steps} steps eta {ETA:g}, {per_class * 10} samples, seed 0",
    )
    results["best_fd_scale"] = {
        str(c): min(ps, key=lambda p: p["fd"])["guidance"] for c, ps in curves.items() if ps
    }
    # Sampling seconds summed over the points, whichever run drew them (total_s is this run's).
    results["points_sampling_s"] = round(sum(p["sampling_s"] for p in points), 1)
    results["total_s"] = round(time.time() - start, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    for c, ps in curves.items():
        print(f"\nLDM step {c}\n{table(ps)}")
    print(json.dumps({"results": str(out / "results.json"), "total_s": results["total_s"]}))


if __name__ == "__main__":
    main()
