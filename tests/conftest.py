"""Test-wide set-up: 8 fake CPU devices, and Fashion-MNIST prepared once per session."""

from __future__ import annotations

import os
import shutil
import tempfile

# Must happen before jax is imported anywhere: exercise sharding code on 8 fake devices, and
# compile with XLA's fast-compile flags (the tests' programs are tiny, so compiling dominates:
# about a third less time; every parity tolerance holds with them). CLI subprocesses inherit both.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 "
    "--xla_llvm_disable_expensive_passes=true",
)
# One persistent compilation cache per session: the CLI subprocesses and repeated in-process runs
# compile the same tiny programs, so later ones load them instead of compiling again. The process
# that makes it (pytest itself; xdist workers inherit the path) removes it at the end: about
# 650 MB per full run.
_SESSION_CACHE_DIR = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _SESSION_CACHE_DIR = tempfile.mkdtemp(prefix="ldm_jax_jit_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE_DIR
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import hypothesis  # noqa: E402
import pytest  # noqa: E402

from ldm_jax.data import datasets  # noqa: E402

# Fuzz tests (hypothesis) are reproducible and bounded: the same examples on every run (no
# example database, derandomized), 50 examples unless a test asks for fewer or more, and no
# per-example deadline (the first example of a test often compiles). A failure prints the
# example and the `@reproduce_failure` blob.
hypothesis.settings.register_profile(
    "ldm_jax",
    max_examples=50,
    deadline=None,
    database=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.load_profile("ldm_jax")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Removes the session's compilation cache when this process made it."""
    if _SESSION_CACHE_DIR is not None:
        shutil.rmtree(_SESSION_CACHE_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tfds data dir holding the prepared Debian Fashion-MNIST (about 5 s, once)."""
    directory = str(tmp_path_factory.mktemp("tfds"))
    datasets.get_builder("fashion_mnist", directory)
    return directory
