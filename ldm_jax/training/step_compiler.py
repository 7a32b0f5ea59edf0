"""Ahead-of-time compilation of a sharded train step, with its compiled memory analysis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding

from ldm_jax.parallel import sharding
from ldm_jax.parallel.compile_options import compiler_options
from ldm_jax.training.host_memory import release_freed_host_memory


def memory_analysis(compiled: Any) -> dict[str, int]:
    """Bytes of arguments, outputs, temporaries and generated code of a compiled program
    (per device; empty where the backend reports none)."""
    stats = compiled.memory_analysis()
    if stats is None:
        return {}
    fields = (
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "temp_size_in_bytes",
        "alias_size_in_bytes",
        "generated_code_size_in_bytes",
    )
    return {f: int(getattr(stats, f)) for f in fields if hasattr(stats, f)}


def compile_train_step(
    step_fn: Callable[[Any, dict[str, jax.Array]], tuple[Any, dict[str, jax.Array]]],
    abstract_state: Any,
    state_shardings: Any,
    abstract_batch: dict[str, jax.ShapeDtypeStruct],
    batch_sharding: NamedSharding,
    mesh: Mesh,
) -> tuple[Callable, dict[str, int]]:
    """Lowers and compiles `step_fn(state, batch) -> (state, metrics)` once.

    The state is donated and keeps its shardings (pinned in and out, so the step never
    recompiles); the batch is split along its leading axis; metrics come back replicated. The
    mesh's platform picks the XLA options (`parallel.compile_options`).

    Returns:
      (the compiled step, its memory analysis in bytes).
    """
    jitted = jax.jit(
        step_fn,
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0,
        compiler_options=compiler_options(mesh.devices.flat[0].platform),
    )
    compiled = jitted.lower(abstract_state, abstract_batch).compile()
    # The compiler's garbage and JAX's caches (the init's executable, this step's trace), before
    # the step's temporaries; `compiled` stays valid.
    release_freed_host_memory(drop_jax_caches=True)
    return compiled, memory_analysis(compiled)
