"""The benchmarks run every benchmark and reports well-formed figures (no timing
assertions: speed is reported by `python -m ldm_jax.bench`, not tested)."""

from __future__ import annotations

import pytest

from ldm_jax.benchmarks import train_steps as bench
from tests.config.test_validation import quickstart_config

pytestmark = pytest.mark.slow


def test_bench_reports_every_benchmark():
    results = bench.run(
        quickstart_config("tiny"), list(bench.BENCHMARKS), batch=8, steps=2, sample_steps=2
    )
    assert [r["bench"] for r in results] == list(bench.BENCHMARKS)
    for r in results[:2]:
        assert r["batch"] == 8 and r["steps_per_s"] > 0 and r["images_per_s"] > 0
        assert r["temp_bytes"] > 0 and r["argument_bytes"] > 0
    assert results[2]["seconds_per_image"] > 0 and results[2]["sample_steps"] == 2


def test_bench_rejects_unknown_names():
    with pytest.raises(ValueError, match="--what: unknown benchmark"):
        bench.run(quickstart_config("tiny"), ["nope"], batch=2, steps=1, sample_steps=1)
