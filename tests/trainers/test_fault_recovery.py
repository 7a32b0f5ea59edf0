"""The train CLI against a damaged checkpoint, a full disk, another config's checkpoint and a
diverging run (tiny quickstart config, autoencoder stage, a checkpoint every 2 steps).

One workdir goes through the faults in order, as a user would meet them:
  1. train to step 4 (checkpoints 2 and 4);
  2. damage checkpoint 4 and extend to step 6 with no file allowed over 200 kB (RLIMIT_FSIZE:
     the kernel refuses the write, as on a full disk): the run falls back to checkpoint 2 with a
     warning, then fails to save step 4 with a one-line error; checkpoint 2 and the damaged
     copy are intact;
  3. rerun with space back: it resumes from step 2 and finishes at step 6;
  4. rerun with a different autoencoder width: a one-line error listing the mismatched shapes,
     and the workdir's config.json still describes its checkpoints.
A second workdir diverges on purpose (a huge learning rate): the run stops naming the step and
the tensor, and with `on_nonfinite=skip` it finishes, logging the skipped steps.
"""

from __future__ import annotations

import glob
import json
import os
import resource
import signal
import subprocess
import sys

import pytest

from tests.cli_runner import FAST_XLA, ROOT

CONFIG = os.path.join(ROOT, "configs", "quickstart.py")
PROGRAM = "python -m ldm_jax.train: error: "

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE / SIGXFSZ are Linux's"),
]


def _limit_file_size(limit: int):
    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(2)[1]))

    return set_limit


def _train(workdir, tfds_dir, *extra, file_limit=None):
    env = {**os.environ, "TFDS_DATA_DIR": tfds_dir}
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FAST_XLA}".strip()
    flags = [
        f"--config={CONFIG}:tiny",
        f"--workdir={workdir}",
        f"--config.data.data_dir={tfds_dir}",
        "--config.stage=autoencoder",
        "--config.autoencoder_train.checkpoint_every=2",
        "--config.autoencoder_train.log_every=1",
        "--config.autoencoder_train.batch_size=8",
    ]
    return subprocess.run(
        [sys.executable, "-m", "ldm_jax.train", *flags, *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        preexec_fn=_limit_file_size(file_limit) if file_limit else None,
    )


def _ok(proc):
    assert proc.returncode == 0, proc.stderr[-4000:]


def _error_line(proc) -> str:
    """The CLI's one-line error (the last line of stderr)."""
    assert proc.returncode == 1, proc.stderr[-4000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(PROGRAM), proc.stderr[-4000:]
    return line


def _steps(workdir):
    return sorted(os.listdir(os.path.join(workdir, "checkpoints", "autoencoder")))


def test_damaged_checkpoint_full_disk_and_other_config(tmp_path, tfds_dir):
    workdir = str(tmp_path / "run")
    _ok(_train(workdir, tfds_dir, "--config.autoencoder_train.steps=4"))
    assert _steps(workdir) == ["2", "4"]

    # 2. Damaged latest checkpoint, then a full disk at the next save.
    for path in glob.glob(
        os.path.join(workdir, "checkpoints", "autoencoder", "4", "state", "**"), recursive=True
    ):
        if os.path.isfile(path) and os.sep + "d" + os.sep in path:
            with open(path, "r+b") as f:
                f.truncate(8)
    proc = _train(workdir, tfds_dir, "--config.autoencoder_train.steps=6", file_limit=200_000)
    assert "Checkpoint step 4" in proc.stderr and "cannot be read" in proc.stderr
    assert "autoencoder: resuming from step 2" in proc.stderr
    assert "Event loop is closed" not in proc.stderr  # no tracebacks of abandoned writes
    line = _error_line(proc)
    assert "Could not write checkpoint step 4" in line and "File too large" in line
    assert "steps: 2)" in line and "run the same command again" in line
    assert _steps(workdir) == ["2", "corrupt-4"]

    # 3. Space is back: the same command resumes from step 2 and finishes.
    proc = _train(workdir, tfds_dir, "--config.autoencoder_train.steps=6")
    _ok(proc)
    assert "autoencoder: resuming from step 2" in proc.stderr
    assert _steps(workdir) == ["4", "6", "corrupt-4"]
    with open(os.path.join(workdir, "config.json")) as f:
        trained_with = f.read()

    # 4. Another config's model: the mismatched shapes, one line; config.json is kept.
    proc = _train(
        workdir,
        tfds_dir,
        "--config.autoencoder_train.steps=8",
        "--config.autoencoder.z_channels=4",
        "--config.autoencoder.embed_dim=4",
    )
    line = _error_line(proc)
    assert "was written by a different model config" in line
    assert "params/decoder/conv_in/kernel: checkpoint (3, 3, 2, " in line
    assert "new --workdir" in line
    with open(os.path.join(workdir, "config.json")) as f:
        assert f.read() == trained_with
    assert _steps(workdir) == ["4", "6", "corrupt-4"]


def test_diverging_run_stops_or_skips_by_config(tmp_path, tfds_dir):
    diverge = [
        "--config.autoencoder_train.steps=3",
        "--config.autoencoder_train.learning_rate=1e12",
    ]
    stopped = str(tmp_path / "stop")
    line = _error_line(_train(stopped, tfds_dir, *diverge))
    assert "produced a non-finite" in line and "(NaN or infinite)" in line
    assert "config.autoencoder_train.on_nonfinite='skip'" in line
    assert _steps(stopped) == ["2"] or _steps(stopped) == []

    skipped = str(tmp_path / "skip")
    proc = _train(skipped, tfds_dir, *diverge, "--config.autoencoder_train.on_nonfinite=skip")
    _ok(proc)
    assert "autoencoder: skipped step" in proc.stderr
    rows = [json.loads(line) for line in open(os.path.join(skipped, "metrics.jsonl"))]
    counts = [r["autoencoder/skipped_steps"] for r in rows if "autoencoder/skipped_steps" in r]
    assert counts and counts[-1] >= 1
    assert _steps(skipped) == ["2", "3"]
