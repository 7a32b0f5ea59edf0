"""Sample quality of one trained workdir at chosen checkpoints, in-process (shared by
`experiments/samplers/run.py` and `experiments/guidance/run.py`).

One point = (LDM checkpoint step, sampler, steps, eta, guidance, sampling seed): `per_class`
samples of every class drawn in one batch by `make_generate_fn` (compiled once per
(sampler, steps) and reused across checkpoints, eta and guidance), scored by
`metrics.evaluate_class_samples` against the same real test images for every point (the
reference sets are chosen with a fixed `reference_seed`, independent of the sampling seed), and
saved as a compressed `.npz` (images uint8 [N, 32, 32], labels [N]) so that later metrics can
rescore them. A point already scored (its JSON beside the npz) is read back, not recomputed, so
an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.data import datasets, pipeline
from ldm_jax.evaluation import classifier as clf
from ldm_jax.evaluation import metrics
from ldm_jax.sampling.generate import GenerateFn, make_generate_fn
from ldm_jax.workdir import layout
from ldm_jax.workdir.reader import TrainedLDM, load_config, load_trained_ldm

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKDIR = ROOT / "runs" / "samplers" / "model"
# The model: the quickstart config (constant learning rate after warm-up, so a longer run passes
# through the same checkpoints), a checkpoint every 1100 LDM steps, all kept. 3300 is what the
# committed results reached on a loaded machine; `run.py --train_steps N` trains further.
TRAIN_STEPS = 3300
TRAIN_OVERRIDES = (
    "--config.train.checkpoint_every=1100",
    "--config.train.keep_checkpoints=20",
    "--config.train.sample_every=0",
)
QUICKSTART_STEP = 2200  # the quickstart's own training length
START_FILE = "train_start.txt"  # in the workdir: time.time() when `train` first ran
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def use_compilation_cache(folder: pathlib.Path) -> None:
    """Keeps XLA executables on disk so a second process reuses the samplers' compilations."""
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def train(workdir: pathlib.Path, quick: bool, steps: int = TRAIN_STEPS) -> dict:
    """Trains (or resumes; a finished run is a no-op) the model to `steps` LDM steps through the
    train CLI.

    Returns:
      The CLI's timing line plus the command and its wall seconds.
    """
    spec = "configs/quickstart.py" + (":tiny" if quick else "")
    overrides = ("--config.train.checkpoint_every=2",)
    if not quick:
        overrides = (f"--config.train.steps={steps}", *TRAIN_OVERRIDES)
    args = ["ldm_jax.train", f"--config={spec}", f"--workdir={workdir}", *overrides]
    env = dict(os.environ)
    if quick:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FAST_XLA}".strip()
    start = time.time()
    start_file = workdir / START_FILE
    if not start_file.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        start_file.write_text(f"{start}\n")
    proc = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**out, "command": "python -m " + " ".join(args), "wall_s": round(time.time() - start)}


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
    """The LDM checkpoint steps present in a workdir, ascending."""
    folder = pathlib.Path(layout.checkpoint_dir(str(workdir), "ldm"))
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def checkpoint_times(workdir: pathlib.Path) -> dict[int, float]:
    """Seconds from the start of training (`START_FILE`, written by `train`; else config.json's
    write, which a resumed run renews) to each LDM checkpoint folder's last change, by step
    (wall-clock, pauses and whatever load the machine had included)."""
    start_file = workdir / START_FILE
    if start_file.exists():
        start = float(start_file.read_text())
    else:
        start = os.path.getmtime(layout.config_path(str(workdir)))
    folder = pathlib.Path(layout.checkpoint_dir(str(workdir), "ldm"))
    return {
        s: round(os.path.getmtime(folder / str(s)) - start, 1) for s in checkpoint_steps(workdir)
    }


@dataclasses.dataclass(frozen=True)
class Point:
    """One sampling configuration to score."""

    step: int  # LDM checkpoint
    sampler: str
    steps: int
    eta: float
    guidance: float
    seed: int = 0
    spacing: str = "leading"  # timestep grid (`diffusion.timesteps`); the library's default

    @property
    def name(self) -> str:
        grid = "" if self.spacing == "leading" else f"_{self.spacing}"
        return (
            f"ckpt{self.step}_{self.sampler}_n{self.steps}_eta{self.eta:g}"
            f"_g{self.guidance:g}_seed{self.seed}{grid}"
        )

    def key(self, per_class: int) -> str:
        """File stem of the point's npz/JSON for `per_class` samples of each class."""
        return f"{self.name}_pc{per_class}"


class Evaluator:
    """Scores points of one workdir; caches models, compiled samplers and results on disk."""

    def __init__(self, workdir: pathlib.Path, out: pathlib.Path, per_class: int, ref_seed: int = 0):
        self.workdir, self.out, self.per_class, self.ref_seed = workdir, out, per_class, ref_seed
        self.out.mkdir(parents=True, exist_ok=True)
        self.config = load_config(str(workdir))
        source = datasets.get_data_source("fashion_mnist", "test")
        self.test_images, self.test_labels = pipeline.load_split_arrays(
            source, self.config.data.image_size
        )
        params, self.classifier_meta = clf.get_or_train_classifier()
        self.classify = metrics.make_classify_fn(clf.FashionClassifier(), params)
        n = self.config.data.num_classes
        self.labels = np.repeat(np.arange(n, dtype=np.int32), per_class)  # [N]
        self._models: dict[int, TrainedLDM] = {}
        self._samplers: dict[tuple[str, int, str], GenerateFn] = {}

    def _model(self, step: int) -> TrainedLDM:
        if step not in self._models:
            # One model in memory at a time.
            self._models = {step: load_trained_ldm(str(self.workdir), step)}
        return self._models[step]

    def _generate(self, sampler: str, steps: int, spacing: str) -> GenerateFn:
        key = (sampler, steps, spacing)
        if key not in self._samplers:
            self._samplers[key] = make_generate_fn(self.config, sampler, steps, spacing)
        return self._samplers[key]

    def score(self, point: Point, cached_only: bool = False) -> dict[str, Any] | None:
        """The point's figures (from disk when already scored; None when not and
        `cached_only`)."""
        npz = self.out / f"{point.key(self.per_class)}.npz"
        cached = self.out / f"{point.key(self.per_class)}.json"
        if cached.exists() and npz.exists():
            return json.loads(cached.read_text())
        if cached_only:
            return None
        model = self._model(point.step)
        generate = self._generate(point.sampler, point.steps, point.spacing)
        start = time.perf_counter()
        images = np.asarray(
            generate(
                model.ae_params,
                model.ldm_params,
                self.labels,
                jax.random.PRNGKey(point.seed),
                jnp.float32(point.guidance),
                jnp.float32(point.eta),
                jnp.float32(model.scale_factor),
            )
        )  # [N, 32, 32, 1] in [-1, 1]
        seconds = time.perf_counter() - start  # includes the first call's compilation
        scores = metrics.evaluate_class_samples(
            self.classify,
            images,
            self.labels,
            self.test_images,
            self.test_labels,
            seed=self.ref_seed,
            num_classes=self.config.data.num_classes,
        )
        pixels = np.round((images[..., 0] + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
        np.savez_compressed(npz, images=pixels, labels=self.labels)
        result = {
            **dataclasses.asdict(point),
            "per_class": self.per_class,
            "reference_seed": self.ref_seed,
            "sampling_s": round(seconds, 1),
            "samples_npz": str(npz.relative_to(ROOT) if npz.is_relative_to(ROOT) else npz),
            **scores,
        }
        cached.write_text(json.dumps(result, indent=1) + "\n")
        print(
            json.dumps(
                {k: result[k] for k in ("step", "sampler", "steps", "eta", "guidance", "seed")}
                | {k: round(result[k], 4) for k in ("accuracy", "mean_diversity_ratio", "fd")}
                | {"fd_ratio": round(result["fd_ratio"], 3), "sampling_s": result["sampling_s"]}
            ),
            flush=True,
        )
        return result


def machine() -> dict[str, Any]:
    """CPUs, JAX version, 1-minute load average and the XLA float32 matmul rate (as the other
    experiments record them)."""
    from ldm_jax.benchmarks.xla_measure import matmul_peak_flops

    return {
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "load_1min": round(os.getloadavg()[0], 2),
        "xla_matmul_gflops": round(matmul_peak_flops() / 1e9, 1),
    }
