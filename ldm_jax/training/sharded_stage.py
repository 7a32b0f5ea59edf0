"""What both trainers do to run on a mesh: sharded state, restore, AOT step, batch feeding."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from ldm_jax.config.options import mesh_config
from ldm_jax.config.validation import ConfigError
from ldm_jax.parallel import sharding
from ldm_jax.training import logging as log
from ldm_jax.training.checkpoint import Checkpointer
from ldm_jax.training.step_compiler import compile_train_step


@dataclasses.dataclass
class ShardedState:
    """A train state on a mesh, with what is needed to feed and checkpoint it.

    Attributes:
      state: the (possibly restored) train state, sharded by `shardings`.
      shardings: `NamedSharding` tree matching `state`.
      meta: the restored checkpoint's metadata ({} for a fresh start).
      mesh / rules: the device mesh and logical-axis rules.
    """

    state: Any
    shardings: Any
    meta: dict[str, Any]
    mesh: Mesh
    rules: tuple

    @property
    def batch_sharding(self) -> NamedSharding:
        return sharding.batch_sharding(self.mesh, self.rules)


def check_batch_size(name: str, field: str, batch_size: int, mesh: Mesh, rules, accum: int):
    """Raises a ConfigError naming the field when the batch cannot be split as asked."""
    divisor = sharding.batch_divisor(mesh, rules) * accum
    multiple = np.lcm(divisor, jax.process_count() * accum)
    if batch_size % multiple:
        raise ConfigError(
            f"{name}: config.{field}.batch_size={batch_size} must be a multiple of {multiple} "
            f"(the batch is split over {sharding.batch_divisor(mesh, rules)} devices of the mesh "
            f"{dict(mesh.shape)}, {jax.process_count()} processes and {accum} accumulation "
            "micro-batches)."
        )


def check_process_rows(mesh: Mesh, batch_sh: NamedSharding, global_batch_size: int) -> None:
    """The loaders give process p rows [p * b, (p + 1) * b) of each global batch; the mesh must
    place exactly those rows on p's devices (else a ConfigError naming the mesh)."""
    p, n = jax.process_index(), jax.process_count()
    per = global_batch_size // n
    want = (p * per, (p + 1) * per)
    got = sharding.process_rows(batch_sh, global_batch_size)
    if got != want:
        raise ConfigError(
            f"config.mesh {dict(mesh.shape)}: process {p} of {n} holds batch rows {got} but "
            f"loads rows {want}. Give the batch axes (data x fsdp) a multiple of the process "
            "count, with each process's devices contiguous along them (e.g. data=-1)."
        )


def init_or_restore(
    init_fn: Callable[[jax.Array], Any],
    rng: jax.Array,
    config: ml_collections.ConfigDict,
    checkpointer: Checkpointer,
) -> ShardedState:
    """Creates the state already sharded on the config's mesh, then restores the latest
    checkpoint into those shardings when there is one."""
    try:
        mesh = sharding.make_mesh(mesh_config(config))
        rules = sharding.logical_axis_rules(mesh_config(config))
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None
    latest = checkpointer.latest_step()
    if jax.process_count() > 1:  # All processes follow process 0's view of the folder.
        latest = int(
            multihost_utils.broadcast_one_to_all(np.int32(-1 if latest is None else latest))
        )
        latest = None if latest < 0 else latest
    if latest is None:
        state, shardings = sharding.create_sharded(init_fn, rng, mesh, rules)
        return ShardedState(state, shardings, {}, mesh, rules)
    abstract, shardings = sharding.sharded_abstract(init_fn, rng, mesh, rules)
    # The latest readable checkpoint: a damaged latest one is set aside for the previous one.
    _, state, meta = checkpointer.restore_latest(abstract, newest=latest)
    return ShardedState(state, shardings, meta, mesh, rules)


def compiled_step(
    name: str,
    step_fn: Callable[[Any, dict[str, jax.Array]], tuple[Any, dict[str, jax.Array]]],
    sharded: ShardedState,
    host_batch: dict[str, np.ndarray],
    global_batch_size: int,
) -> Callable[[Any, dict[str, np.ndarray]], tuple[Any, dict[str, jax.Array]]]:
    """Compiles `step_fn` ahead of time and returns (state, host batch) -> (state, metrics).

    `host_batch` is one batch of this process's rows (for shapes and dtypes). Process 0 logs
    the mesh and compiled memory analysis as a JSON object in one status line.
    """
    batch_sh = sharded.batch_sharding
    check_process_rows(sharded.mesh, batch_sh, global_batch_size)
    abstract_batch = {
        k: jax.ShapeDtypeStruct((global_batch_size,) + v.shape[1:], v.dtype, sharding=batch_sh)
        for k, v in host_batch.items()
    }
    abstract_state = sharding.abstract_with_shardings(sharded.state, sharded.shardings)
    compiled, memory = compile_train_step(
        step_fn, abstract_state, sharded.shardings, abstract_batch, batch_sh, sharded.mesh
    )
    log.info(
        "%s: compiled the train step: %s",
        name,
        json.dumps({"mesh": dict(sharded.mesh.shape), "compiled_memory_bytes": memory}),
    )

    def step(state, batch):
        return compiled(state, sharding.put_batch(batch, batch_sh, global_batch_size))

    return step


@functools.lru_cache(maxsize=4)
def _replicate_fn(mesh: Mesh) -> Callable[[Any], Any]:
    return jax.jit(lambda x: x, out_shardings=sharding.replicated(mesh))


def replicated_to_host(tree: Any, mesh: Mesh) -> Any:
    """A full numpy copy of a sharded tree on every process (for sampling from process 0).

    The tree is replicated on the devices first: fine for the sample grids of models that fit
    one device; FSDP-only models should sample with a sharded program instead.
    """
    return jax.tree.map(np.asarray, _replicate_fn(mesh)(tree))
