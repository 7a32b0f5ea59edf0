"""Two processes on 127.0.0.1 (4 CPU devices each) train like one process with 8 devices.

Both runs use the tiny quickstart config with FSDP over all 8 devices; the global batches are
the same (each process loads only its half of every batch), so the per-step losses must agree.
The 2-process checkpoint must restore into, and continue in, a single process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs.quickstart import get_config
from ldm_jax.trainers import ldm as train_ldm
from tests.cli_runner import FAST_XLA

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "quickstart.py")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_cmd(workdir: str, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ldm_jax.train",
        f"--config={CONFIG}:tiny",
        f"--workdir={workdir}",
        *extra,
    ]


def _env(tfds_dir: str, **extra: str) -> dict[str, str]:
    """The test's environment plus XLA's fast-compile flags (compile time dominates these tiny
    runs; both sides of every comparison compile with the same flags)."""
    env = {**os.environ, "TFDS_DATA_DIR": tfds_dir, **extra}
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FAST_XLA}".strip()
    return env


def _check(proc: subprocess.CompletedProcess | subprocess.Popen, out: str, err: str) -> None:
    if proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}:\n{out[-3000:]}\n{err[-6000:]}")


def _single_process(workdir: str, tfds_dir: str, extra: list[str]) -> None:
    proc = subprocess.run(
        _train_cmd(workdir, extra),
        cwd=ROOT,
        env=_env(tfds_dir),  # conftest: XLA_FLAGS gives 8 fake devices.
        capture_output=True,
        text=True,
        timeout=600,
    )
    _check(proc, proc.stdout, proc.stderr)


def _start_two_processes(workdir: str, tfds_dir: str, extra: list[str]) -> list[subprocess.Popen]:
    port = _free_port()
    # 4 devices per process from JAX_NUM_CPU_DEVICES, not 8 from the conftest's XLA_FLAGS.
    env = _env(tfds_dir, JAX_NUM_CPU_DEVICES="4", JAX_PLATFORMS="cpu", XLA_FLAGS="")
    return [
        subprocess.Popen(
            _train_cmd(
                workdir,
                extra
                + [
                    f"--coordinator_address=127.0.0.1:{port}",
                    "--num_processes=2",
                    f"--process_id={i}",
                ],
            ),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def _two_processes(workdir: str, tfds_dir: str, extra: list[str]) -> None:
    procs = _start_two_processes(workdir, tfds_dir, extra)
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        _check(p, out, err)
    assert '"fsdp": 8' in outputs[0][1]  # The compiled-step status line (stderr) names the mesh.


def _losses(workdir: str) -> dict[str, list[float]]:
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    out: dict[str, list[float]] = {}
    for row in rows:
        for key in ("autoencoder/loss", "ldm/loss"):
            if key in row:
                out.setdefault(key, []).append(row[key])
    return out


def test_two_processes_match_one_process_and_restore_into_one(tmp_path, tfds_dir):
    # FSDP over all 8 devices: parameters and every batch are split across the two processes.
    mesh = ["--config.mesh.data=1", "--config.mesh.fsdp=-1"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    _single_process(one, tfds_dir, mesh)
    _two_processes(two, tfds_dir, mesh)
    single, multi = _losses(one), _losses(two)
    assert len(single["autoencoder/loss"]) == 3 and len(single["ldm/loss"]) == 4
    for key in single:
        np.testing.assert_allclose(multi[key], single[key], rtol=1e-5, err_msg=key)
    assert os.path.exists(os.path.join(two, "checkpoints", "ldm", "4"))

    # The 2-process checkpoint restores into this (single, 8-device) process ...
    config = get_config("tiny")
    state_two, meta_two = train_ldm.restore(two, config)
    state_one, meta_one = train_ldm.restore(one, config)
    assert int(state_two.step) == 4
    # Each process encodes on its own device; one process encodes on the 8-device mesh.
    assert meta_two["scale_factor"] == pytest.approx(meta_one["scale_factor"], rel=1e-6)
    for a, b in zip(
        jax.tree.leaves(state_two.params), jax.tree.leaves(state_one.params), strict=True
    ):
        # atol: biases in front of a GroupNorm get only rounding-noise gradients (their true
        # gradient is zero), which Adam turns into ~1e-6 moves; real weights are O(0.1).
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    # ... and a single process continues the 2-process run.
    _single_process(two, tfds_dir, mesh + ["--config.train.steps=6"])
    assert os.path.exists(os.path.join(two, "checkpoints", "ldm", "6"))


def _wait_for_logged_steps(workdir: str, procs: list[subprocess.Popen], steps: int) -> None:
    """Waits until process 0 has logged `steps` training steps (both processes are then inside
    the step loop, whose collectives need both)."""
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                out, err = p.communicate()
                raise AssertionError(f"a process exited early ({p.returncode}):\n{err[-4000:]}")
        if os.path.exists(path):
            with open(path) as f:
                if sum('"autoencoder/loss"' in line for line in f) >= steps:
                    return
        time.sleep(0.5)
    raise AssertionError("training did not start in time")


def test_sigterm_to_one_process_stops_both_at_the_same_checkpoint(tmp_path, tfds_dir):
    # A preemption notice may reach any one host of a job: process 1 gets SIGTERM, and both
    # processes must agree to save the same step and stop (else process 0 would wait forever
    # in the next step's collectives, or the two would save different steps).
    workdir = str(tmp_path / "preempted")
    long_run = [
        "--config.stage=autoencoder",
        "--config.autoencoder_train.steps=100000",
        "--config.autoencoder_train.log_every=1",
        "--config.autoencoder_train.checkpoint_every=100000",
    ]
    procs = _start_two_processes(workdir, tfds_dir, long_run)
    try:
        _wait_for_logged_steps(workdir, procs, steps=2)
        procs[1].send_signal(signal.SIGTERM)
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    saved = []
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 1, err[-4000:]
        last = err.strip().splitlines()[-1]
        match = re.search(r"SIGTERM received; saved a checkpoint at step (\d+)", last)
        assert match, err[-4000:]
        saved.append(int(match.group(1)))
    assert saved[0] == saved[1] >= 2
    step = saved[0]
    ckpt_dir = os.path.join(workdir, "checkpoints", "autoencoder")
    assert sorted(os.listdir(ckpt_dir)) == [str(step)]

    # The same workdir resumes from that step (here in one process with 8 devices).
    _single_process(
        workdir,
        tfds_dir,
        long_run[:1] + [f"--config.autoencoder_train.steps={step + 1}", "--config.mesh.data=-1"],
    )
    assert sorted(os.listdir(ckpt_dir)) == sorted([str(step), str(step + 1)])
