"""XLA-side measurements: AOT compile time, FLOPs from XLA's cost analysis, matmul peak.

FLOPs are read from the cost analysis of the lowered program with attention forced to the
loop-free "einsum" form (`attention_kernels.override`): XLA counts a loop body once, not once
per iteration, so the blocked kernel's `lax.map` would hide most of the attention FLOPs. Both
forms do the same matmuls; the count is the model's, not the kernel's.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.benchmarks.timing import time_iterations
from ldm_jax.models import attention_kernels
from ldm_jax.parallel.compile_options import compiler_options
from ldm_jax.training.host_memory import release_freed_host_memory


def compile_timed(fn: Any, *args: Any) -> tuple[Any, float]:
    """`fn.lower(*args).compile()` (a jitted `fn`) and the seconds it took.

    JAX's caches (the init's executable) are dropped before compiling, and they and the
    compiler's freed memory afterwards, as the trainer does (`training.host_memory`), so the
    peak RSS a benchmark reports is the program's.
    """
    release_freed_host_memory(drop_jax_caches=True)
    start = time.perf_counter()
    compiled = fn.lower(*args).compile(compiler_options=compiler_options())
    seconds = time.perf_counter() - start
    release_freed_host_memory(drop_jax_caches=True)
    return compiled, seconds


def xla_flops(fn: Any, *args: Any) -> float | None:
    """FLOPs of one call of `fn(*args)` from XLA's cost analysis (attention as einsum).

    `fn` must be loop-free apart from attention (a sampler's loop is counted by the caller). It
    is traced afresh through a new wrapper: JAX caches traces per function object, and a trace
    made outside the override would keep the blocked kernel's loop.
    """
    with attention_kernels.override("einsum"):
        analysis = jax.jit(lambda *a: fn(*a)).lower(*args).cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops else None


@functools.cache
def matmul_peak_flops(dtype: str = "float32", n: int = 2048, repeats: int = 5) -> float:
    """The machine's best XLA matmul rate (FLOP/s) for an n x n x n product in `dtype`."""
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), dtype)
    mm = jax.jit(lambda a, b: a @ b)
    times = time_iterations(lambda: jax.block_until_ready(mm(a, a)), repeats, warmup=2)
    return 2.0 * n**3 / min(times)


def xla_threads() -> int:
    """CPU cores XLA may use (its intra-op pool follows the process's CPU affinity)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
