"""End-to-end: the train CLI on a tiny config, resume/extend, then the sample CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from tests.test_cli import assert_quiet_stderr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "quickstart.py")

pytestmark = pytest.mark.slow


def _run(args, tfds_dir, check=True):
    env = {**os.environ, "TFDS_DATA_DIR": tfds_dir}
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def test_train_resume_extend_then_sample(tmp_path, tfds_dir):
    workdir = str(tmp_path / "run")
    train = ["ldm_jax.train", f"--config={CONFIG}:tiny", f"--workdir={workdir}"]
    first = _run(train + ["--config.train.steps=2"], tfds_dir)
    assert "ldm:" in first.stderr and "steps/s" in first.stderr  # progress bar
    assert_quiet_stderr(first.stderr)  # no jax/orbax chatter; each status line once
    assert len(first.stdout.strip().splitlines()) == 1  # the JSON result line only
    for path in (
        "config.json",
        "checkpoints/autoencoder/3",
        "checkpoints/ldm/2",
        "samples/step_2.png",
        "samples/autoencoder_step_3.png",
    ):
        assert os.path.exists(os.path.join(workdir, path)), path
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))

    # Same workdir, more steps: stage 1 is complete and skipped, stage 2 resumes at step 2.
    second = _run(train + ["--config.train.steps=4"], tfds_dir)
    assert "ldm: resuming from step 2" in second.stdout + second.stderr
    assert not re.search(r"autoencoder: +\d+%\|", second.stderr)  # no stage-1 bar: not retrained
    assert os.path.exists(os.path.join(workdir, "checkpoints/ldm/4"))

    out = str(tmp_path / "sneakers.png")
    _run(
        [
            "ldm_jax.sample",
            f"--workdir={workdir}",
            "--class=7",
            "--num=4",
            f"--out={out}",
            "--guidance=2.5",
            "--steps=3",
        ],
        tfds_dir,
    )
    image = np.asarray(Image.open(out))
    assert image.shape == (2 * 34 + 2, 2 * 34 + 2)  # 2x2 grid of 32x32 tiles, 2 px padding
    assert image[2:34, 2:34].std() > 0  # not a blank tile

    bad = _run(
        ["ldm_jax.sample", f"--workdir={workdir}", "--class=12", f"--out={out}"],
        tfds_dir,
        check=False,
    )
    assert bad.returncode != 0 and "--class must be in [0, 10)" in bad.stderr


def test_sample_on_missing_workdir_says_how_to_train(tmp_path, tfds_dir):
    proc = _run(
        ["ldm_jax.sample", f"--workdir={tmp_path / 'nothing'}", "--out=x.png"],
        tfds_dir,
        check=False,
    )
    assert proc.returncode != 0
    assert "is not a training workdir" in proc.stderr and "ldm_jax.train" in proc.stderr


def _tiny(tfds_dir, **train):
    from tests.config.test_validation import quickstart_config

    config = quickstart_config("tiny")
    config.data.data_dir = tfds_dir
    config.train.update(train)
    return config


def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path, tfds_dir):
    from ldm_jax.trainers import ldm as train_ldm
    from ldm_jax.trainers import run as train

    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    train.run(_tiny(tfds_dir, steps=4, checkpoint_every=4), straight)
    train.run(_tiny(tfds_dir, steps=2, checkpoint_every=4), split)
    train.run(_tiny(tfds_dir, steps=4, checkpoint_every=4), split)
    config = _tiny(tfds_dir, steps=4)
    a, meta_a = train_ldm.restore(straight, config)
    b, meta_b = train_ldm.restore(split, config)
    assert int(a.step) == int(b.step) == 4
    assert meta_a == meta_b  # same data position and scale factor
    for x, y in zip(
        jax.tree.leaves((a.params, a.ema_params, a.opt_state, a.rng)),
        jax.tree.leaves((b.params, b.ema_params, b.opt_state, b.rng)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_bad_config_value_fails_fast_with_one_line_naming_the_field(tmp_path, tfds_dir):
    proc = _run(
        [
            "ldm_jax.train",
            f"--config={CONFIG}",
            f"--workdir={tmp_path / 'run'}",
            "--config.data.image_size=30",
        ],
        tfds_dir,
        check=False,
    )
    assert proc.returncode == 1
    assert "error: config.data.image_size: 30 is not divisible" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints")  # nothing was started

    typo = [f"--config={CONFIG}", f"--workdir={tmp_path / 'run'}", "--config.train.stesp=10"]
    proc = _run(["ldm_jax.train", *typo], tfds_dir, check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"python -m ldm_jax.train: error: unknown config key --config.train.stesp (not in "
        f"{CONFIG}). Did you mean --config.train.steps?"
    ]


def test_sigterm_during_training_checkpoints_and_exits(tmp_path, tfds_dir):
    import signal
    import time

    workdir = tmp_path / "run"
    log = open(tmp_path / "stderr.txt", "w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ldm_jax.train",
            f"--config={CONFIG}:tiny",
            f"--workdir={workdir}",
            "--config.train.steps=100000",
            "--config.train.checkpoint_every=100000",
        ],
        cwd=ROOT,
        env={**os.environ, "TFDS_DATA_DIR": tfds_dir},
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    deadline = time.time() + 300
    bar = re.compile(r"ldm: +\d+%\|")  # the LDM loop runs (its SIGTERM handler is set)
    while not bar.search(open(tmp_path / "stderr.txt").read()) and time.time() < deadline:
        assert proc.poll() is None, open(tmp_path / "stderr.txt").read()[-3000:]
        time.sleep(0.5)
    time.sleep(2)  # a few LDM steps
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    stderr = open(tmp_path / "stderr.txt").read()
    assert proc.returncode == 1, stderr[-3000:]
    assert "SIGTERM received; saved a checkpoint at step" in stderr
    steps = [int(d) for d in os.listdir(workdir / "checkpoints" / "ldm") if d.isdigit()]
    assert steps and max(steps) > 0
