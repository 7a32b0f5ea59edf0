"""XLA compiler options for the library's compiled programs, chosen per backend.

On XLA:CPU in jaxlib 0.10, YNNPACK takes dots and reductions (with their fused elementwise
producers and consumers) and, by default, also every convolution on its own
(`LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION`). On the 2-core machine of this project its
convolutions with 64 output channels run on one core: at 32x32, batch 8, a 3x3 convolution
128 -> 64 took 12.3 ms forward and 25 ms forward+backward, the same with one core as with two.
XLA's own (Eigen) convolutions use both cores: 6.7 and 13.5 ms. Leaving convolutions out of
YNNPACK (`YNN_FUSION_TYPES`: dots and reductions only) made the sd_small_cpu U-Net forward 7%
faster and its train step 5% faster in same-process A/B runs (2026-12-07, ldm_jax.bench and
benchmarks/README.md); the autoencoder's speed was unchanged and its peak RSS 6% lower.

XLA:CPU's default scheduler orders a program for concurrency (`xla_cpu_scheduler_type`), which
keeps more buffers alive at once than running it needs on a few cores. The memory-optimised
scheduler cut the sd_small_cpu train step's temporaries from 1,076 to 789 MB and the forward's
from 97 to 63 MB at the same speed (same-process A/B, 2026-12-07). The older boolean
`xla_cpu_enable_concurrency_optimized_scheduler` has no effect as a compiler option in jaxlib 0.10.

The options are passed per program (`jax.jit(..., compiler_options=...)`), never through
`XLA_FLAGS`, so an XLA without an option only loses that tuning: `compiler_options` passes an
option only when a tiny program compiles with it. A user's own `XLA_FLAGS` setting of an option
wins (the library then leaves that option out). JAX accepts compiler options only on a top-level
jit, so functions that users may also call inside their own jit use `top_level_jit`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
YNN_FUSION_TYPES = "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"
SCHEDULER_OPTION = "xla_cpu_scheduler_type"
MEMORY_OPTIMIZED_SCHEDULER = "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"
# Each CPU option and the value the library passes (when XLA accepts it and XLA_FLAGS leaves it).
CPU_OPTIONS = {YNN_OPTION: YNN_FUSION_TYPES, SCHEDULER_OPTION: MEMORY_OPTIMIZED_SCHEDULER}


@functools.cache
def _accepted(option: str, value: str) -> bool:
    """Whether this XLA compiles a tiny program with `option=value`."""
    try:
        jax.jit(lambda x: x + 1).lower(jnp.zeros((2,), jnp.float32)).compile(
            compiler_options={option: value}
        )
    except Exception:  # noqa: BLE001 - any refusal (unknown option or value) means "not here"
        return False
    return True


def compiler_options(backend: str | None = None) -> dict[str, str] | None:
    """Options for `jax.jit(..., compiler_options=...)` on `backend` (default: JAX's).

    Returns:
      On XLA:CPU, the entries of `CPU_OPTIONS` that this XLA accepts and `XLA_FLAGS` does not
      set; None (XLA's defaults) on other backends or when no entry is left.
    """
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu":
        return None
    flags = os.environ.get("XLA_FLAGS", "")
    options = {
        option: value
        for option, value in CPU_OPTIONS.items()
        if option not in flags and _accepted(option, value)
    }
    return options or None


def top_level_jit(fn: Callable[..., Any], **jit_kwargs: Any) -> Callable[..., Any]:
    """`jax.jit(fn, **jit_kwargs)` that carries `compiler_options()` when called top-level.

    Called inside another trace (an argument is a `jax.core.Tracer`, or JAX refuses the options
    on a nested jit) it runs as a plain jit, which the enclosing program inlines. `.lower` is
    the top-level form (for ahead-of-time compilation) and `_cache_size` counts its compiled
    programs (tests check that new inputs reuse one); `__wrapped__` is `fn`.
    """
    options = compiler_options()
    plain = jax.jit(fn, **jit_kwargs)
    if options is None:  # other backends: nothing to choose between
        return plain
    with_options = jax.jit(fn, compiler_options=options, **jit_kwargs)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        leaves = jax.tree.leaves((args, kwargs))
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            return plain(*args, **kwargs)
        try:
            return with_options(*args, **kwargs)
        except ValueError as err:  # a nested jit whose arguments are all constants
            if "top-level" not in str(err):
                raise
            return plain(*args, **kwargs)

    call.lower = with_options.lower  # type: ignore[attr-defined]
    call._cache_size = with_options._cache_size  # type: ignore[attr-defined]  # compile counts
    return call
