"""End-to-end: `python -m ldm_jax.cache_latents` on a tiny trained workdir."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ldm_jax.data import latents_on_disk as latent_store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "quickstart.py")

pytestmark = pytest.mark.slow


def _run(args, tfds_dir):
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, "TFDS_DATA_DIR": tfds_dir},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _ok(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _error(proc) -> str:
    assert proc.returncode == 1, proc.stderr[-5000:]
    assert "Traceback" not in proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_cache_latents_cli_writes_keeps_detects_stale_and_overwrites(tmp_path, tfds_dir):
    workdir = str(tmp_path / "run")
    train = [
        "ldm_jax.train",
        f"--config={CONFIG}:tiny",
        f"--workdir={workdir}",
        "--config.stage=autoencoder",
    ]
    cache = ["ldm_jax.cache_latents", f"--workdir={workdir}"]

    line = _error(_run(cache, tfds_dir))  # no workdir yet
    assert "is not a training workdir" in line and "ldm_jax.train" in line

    assert _run(train, tfds_dir).returncode == 0  # 3 autoencoder steps on train[:256]
    first = _ok(_run(cache, tfds_dir))
    assert first["status"] == "written" and first["num_examples"] == 256
    assert first["latent_shape"] == [16, 16, 2] and first["first_stage_step"] == 3
    store = latent_store.open_latent_store(os.path.join(workdir, "latents"))
    assert store.num_examples == 256 and np.isfinite(store.load_arrays()["mean"]).all()
    assert sorted(os.listdir(workdir)).count("latents") == 1
    assert not [n for n in os.listdir(workdir) if ".tmp-" in n]

    assert _ok(_run(cache, tfds_dir))["status"] == "up to date"

    # Training the first stage further makes the cache stale: an error until --overwrite.
    assert _run(train + ["--config.autoencoder_train.steps=4"], tfds_dir).returncode == 0
    line = _error(_run(cache, tfds_dir))
    assert "other first-stage weights (autoencoder step 3)" in line
    assert "--overwrite" in line
    again = _ok(_run(cache + ["--overwrite"], tfds_dir))
    assert again["status"] == "written" and again["first_stage_step"] == 4


def test_cache_latents_cli_without_autoencoder_checkpoint(tmp_path, tfds_dir):
    workdir = tmp_path / "run"
    workdir.mkdir()
    from tests.config.test_validation import quickstart_config

    (workdir / "config.json").write_text(quickstart_config("tiny").to_json_best_effort())
    line = _error(_run(["ldm_jax.cache_latents", f"--workdir={workdir}"], tfds_dir))
    assert "No autoencoder checkpoint" in line and "--config.stage=autoencoder" in line
