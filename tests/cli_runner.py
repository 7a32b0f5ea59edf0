"""Runs a project CLI (`python -m ldm_jax.<name>`) in a subprocess, as a user would, with XLA's
fast-compile flags (the tests' runs are tiny: compile time dominates)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def run_cli(*args: str) -> str:
    """`python -m <args>` from the repository root; asserts success and returns its stdout."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FAST_XLA}".strip()
    proc = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
