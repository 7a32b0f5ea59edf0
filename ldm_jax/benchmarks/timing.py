"""Framework-neutral timing, memory and result records, shared by our benchmarks and the peer.

Every benchmark prints one JSON object with the fields of `record`: median and min seconds per
iteration after warm-up, compile (or first-call) seconds apart, items/s, the process's peak
resident memory, the achieved FLOP/s and the machine's measured matmul peak in the same dtype.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

# The fields every benchmark record has (tests check them; the README table reads them).
FIELDS = (
    "bench",
    "framework",
    "preset",
    "batch",
    "dtype",
    "median_s",
    "min_s",
    "repeats",
    "compile_s",
    "items_per_s",
    "item",
    "peak_rss_bytes",
    "flops_per_iter",
    "achieved_flops_per_s",
    "matmul_peak_flops_per_s",
    "utilisation",
    "threads",
    "load_avg_1m",
)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class Timings(list):
    """Seconds per timed call, and the process's peak RSS when the last call returned."""

    peak_rss_bytes: int


def time_iterations(run: Callable[[], Any], repeats: int, warmup: int = 1) -> Timings:
    """Seconds of each of `repeats` calls of `run` after `warmup` untimed calls.

    `run` must block until its work is done (e.g. end with `jax.block_until_ready`). The
    result also carries the peak RSS right after the timing, before anything a benchmark
    measures afterwards (FLOP counts, the matmul peak) allocates its own memory.
    """
    for _ in range(warmup):
        run()
    times = Timings()
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    times.peak_rss_bytes = peak_rss_bytes()
    return times


def record(
    bench: str,
    framework: str,
    preset: str,
    batch: int,
    dtype: str,
    times: list[float],
    compile_s: float,
    items_per_iter: float,
    item: str,
    flops_per_iter: float | None,
    matmul_peak: float | None,
    threads: int,
    **extra: Any,
) -> dict[str, Any]:
    """One benchmark result with every field of `FIELDS` (plus `extra`).

    The peak RSS is the one `time_iterations` saw at the end of the timing (now, for plain
    lists of times).
    """
    median = statistics.median(times)
    achieved = flops_per_iter / median if flops_per_iter else None
    return {
        "bench": bench,
        "framework": framework,
        "preset": preset,
        "batch": batch,
        "dtype": dtype,
        "median_s": round(median, 5),
        "min_s": round(min(times), 5),
        "repeats": len(times),
        "compile_s": round(compile_s, 3),
        "items_per_s": round(items_per_iter / median, 4),
        "item": item,
        "peak_rss_bytes": getattr(times, "peak_rss_bytes", None) or peak_rss_bytes(),
        "flops_per_iter": flops_per_iter,
        "achieved_flops_per_s": achieved,
        "matmul_peak_flops_per_s": matmul_peak,
        "utilisation": round(achieved / matmul_peak, 4) if achieved and matmul_peak else None,
        "threads": threads,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        **extra,
    }


def emit(result: dict[str, Any]) -> dict[str, Any]:
    """Prints `result` as one JSON line and returns it."""
    print(json.dumps(result), flush=True)
    return result
