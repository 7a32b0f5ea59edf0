"""Latent vs pixel space (the paper's Table 6 idea) on this CPU: LDM-1 against LDM-4.

  python experiments/latent_vs_pixel/run.py [--rounds 2] [--quick]

Throughput: the compiled stage-2 train step (`python -m ldm_jax.bench --what ldm_step`'s
program, random latents, batch 64) and guided DDIM sampling with decoding (10 steps, eta 1,
guidance 2, batch 16, the f study's trained weights) of the f study's Fashion-MNIST LDM-1 and
LDM-4 (`configs/f_study/ldm.py`), measured alternately in `--rounds` rounds in one process (the
machine is shared: the best round of each is its figure, and every round is kept). Quality after
equal wall time: the f study's scored checkpoints (`experiments/f_study/results.json`), LDM-1's
last one against the LDM-4 checkpoints reached within the same wall-clock seconds.
`--quality_only` keeps the throughput already in `results.json` and redoes the comparison from
the f study's latest results. `--quick` times the `:tiny` configs for a few steps with random
weights (seconds).
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
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "configs" / "f_study"))
sys.path.insert(0, str(ROOT / "experiments" / "f_study"))

import compute  # noqa: E402  (experiments/f_study/compute.py)
import ldm as study_config  # noqa: E402  (configs/f_study/ldm.py)

DATASET = "fashion_mnist"
FACTORS = (1, 4)
BATCH = 64
TRAIN_STEPS = 5  # timed train steps per round
SAMPLE_STEPS = 10  # as the f study scores
SAMPLE_BATCH = 16
STUDY = ROOT / "experiments" / "f_study" / "results.json"


def _weights(config, f: int, study: dict, quick: bool):
    """The f study's trained weights (random ones under --quick or when missing)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from ldm_jax.config import builders
    from ldm_jax.trainers import ldm as train_ldm
    from ldm_jax.workdir.reader import load_trained_ldm

    run = study.get("runs", {}).get(f"{DATASET}_f{f}")
    if run and not quick and os.path.isdir(run["workdir"]):
        trained = load_trained_ldm(run["workdir"])
        return trained.ae_params, trained.ldm_params, "trained"
    ae = builders.build_autoencoder(config)
    size, ch = config.data.image_size, config.data.channels
    variables = nn.unbox(ae.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, ch))))
    ae_params = variables.get("params", {})  # {} for the identity first stage
    return ae_params, train_ldm.init_state(config, train_ldm.optimizer(config)).ema_params, "random"


def throughput(rounds: int, quick: bool, study: dict) -> dict:
    """Training and sampling images/s of LDM-1 and LDM-4, every round and the best."""
    configs = {
        f: study_config.get_config(f"{DATASET},{f}" + (",tiny" if quick else "")) for f in FACTORS
    }
    for c in configs.values():
        c.sample.steps = 2 if quick else SAMPLE_STEPS
    batch = 8 if quick else BATCH
    weights = {f: _weights(configs[f], f, study, quick) for f in FACTORS}
    out = {f: {"train": [], "sample": [], "weights": weights[f][2]} for f in FACTORS}
    for _ in range(rounds):
        for f in FACTORS:
            t = compute.train_images_per_s(configs[f], batch, 2 if quick else TRAIN_STEPS)
            out[f]["train"].append(t["images_per_s"])
            ae, ldm, _ = weights[f]
            s = compute.sample_images_per_s(
                configs[f], ae, ldm, 4 if quick else SAMPLE_BATCH, configs[f].sample.steps, 1
            )
            out[f]["sample"].append(s["images_per_s"])
            print(json.dumps({"f": f, "train": t["images_per_s"], "sample": s}), flush=True)
    for f in FACTORS:
        known = study.get("flops_per_step", {}).get(f"{DATASET}_f{f}")
        flops = known if known and not quick else compute.train_step_flops(configs[f], batch)
        out[f]["train_flops_per_step"] = flops  # XLA's count (the f study's, batch 64)
        out[f]["best_train_images_per_s"] = max(out[f]["train"])
        out[f]["best_sample_images_per_s"] = max(out[f]["sample"])
    return {
        "batch": batch,
        "sample_batch": 4 if quick else SAMPLE_BATCH,
        "sample_steps": configs[1].sample.steps,
        "guidance": float(configs[1].sample.guidance_scale),
        "eta": float(configs[1].sample.eta),
        **{f"ldm{f}": out[f] for f in FACTORS},
    }


def equal_wall_time(study: dict) -> dict:
    """LDM-1's last scored checkpoint beside LDM-4's scored checkpoints by wall-clock second."""
    runs = study.get("runs", {})
    pixel, latent = runs.get(f"{DATASET}_f1"), runs.get(f"{DATASET}_f4")
    if not (pixel and latent and pixel.get("scores") and latent.get("scores")):
        return {}

    def points(run: dict) -> list[dict]:
        return [
            {
                "step": int(s),
                "wall_s": run["checkpoint_wall_s"][s],
                **{k: v[k] for k in ("fd", "fd_ratio", "accuracy") if k in v},
            }
            for s, v in sorted(run["scores"].items(), key=lambda kv: int(kv[0]))
        ]

    pixel_points, latent_points = points(pixel), points(latent)
    budget = pixel_points[-1]["wall_s"]
    within = [p for p in latent_points if p["wall_s"] <= budget]
    return {
        "ldm1": pixel_points,
        "ldm4": latent_points,
        "ldm1_final_wall_s": budget,
        "ldm4_best_within_that_wall": within[-1] if within else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--quality_only", action="store_true", help="keep results.json's throughput"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = pathlib.Path(args.out or (tempfile.mkdtemp(prefix="lvp_quick_") if args.quick else HERE))
    study = json.loads(STUDY.read_text()) if STUDY.exists() else {}
    import jax

    from ldm_jax.benchmarks.xla_measure import matmul_peak_flops

    path = out / "results.json"
    if args.quality_only and path.exists():  # keep the measured throughput
        results = json.loads(path.read_text())
    else:
        start = time.time()
        results = {
            "machine": {
                "cpus": os.cpu_count(),
                "jax": jax.__version__,
                "load_1min_before": round(os.getloadavg()[0], 2),
                "xla_matmul_gflops": round(matmul_peak_flops() / 1e9, 1),
            },
            "throughput": throughput(args.rounds, args.quick, study),
        }
        results["machine"]["load_1min_after"] = round(os.getloadavg()[0], 2)
        results["total_s"] = round(time.time() - start, 1)
    results["equal_wall_time"] = {} if args.quick else equal_wall_time(study)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
