"""The device mesh (data, fsdp, tensor), logical-axis rules, and sharded state creation.

Model parameters carry logical axis names (`ldm_jax.models.partitioning`); a config's
`mesh.logical_axis_rules` maps each name to mesh axes. A dimension whose size the mapped mesh
axes do not divide is replicated instead (e.g. the 3 output channels of a decoder), so every
config runs on every mesh.

  mesh = make_mesh(config.mesh)
  rules = logical_axis_rules(config.mesh)
  state, shardings = create_sharded(init_fn, rng, mesh, rules)   # created already sharded
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH = "batch"

# Logical name -> mesh axes. FSDP shards the input width of kernels, tensor parallelism their
# output width (attention heads, MLP hidden units, conv output channels); the batch is split over
# both data axes.
DEFAULT_LOGICAL_AXIS_RULES = (
    (BATCH, ("data", "fsdp")),
    ("embed", "fsdp"),
    ("conv_in", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("conv_out", "tensor"),
    ("vocab", None),
)

Rules = Sequence[tuple[str, str | Sequence[str] | None]]


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) sizes; one axis may be -1 to take the remaining devices.

    Raises:
      ValueError: naming the fields when the sizes do not multiply to `num_devices`.
    """
    sizes = [int(mesh_config[a]) for a in MESH_AXES]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(
            f"mesh.data/fsdp/tensor = {sizes}: use positive sizes, with at most one -1 "
            "(the remaining devices)."
        )
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(
                f"mesh.data/fsdp/tensor = {sizes}: {num_devices} devices are not divisible by "
                f"{known}. Choose sizes whose product divides the device count."
            )
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"mesh.data/fsdp/tensor = {sizes} needs {math.prod(sizes)} devices but "
            f"{num_devices} are available. Set one axis to -1 to use all of them."
        )
    return tuple(sizes)  # type: ignore[return-value]


def make_mesh(mesh_config: ml_collections.ConfigDict, devices: Sequence[Any] | None = None) -> Mesh:
    """The (data, fsdp, tensor) mesh over all devices of all processes (Auto axis types)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_config, len(devices))
    return jax.make_mesh(
        shape,
        MESH_AXES,
        axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
        devices=devices,
    )


def logical_axis_rules(mesh_config: ml_collections.ConfigDict) -> tuple:
    """The config's rules as a tuple of (logical name, mesh axes or None) pairs."""
    rules = mesh_config.get("logical_axis_rules", DEFAULT_LOGICAL_AXIS_RULES)
    out = []
    for rule in rules:
        name, axes = rule
        if isinstance(axes, (list, tuple)):
            axes = tuple(axes)
        for axis in axes if isinstance(axes, tuple) else (axes,):
            if axis is not None and axis not in MESH_AXES:
                raise ValueError(
                    f"mesh.logical_axis_rules maps {name!r} to unknown mesh axis {axis!r}; "
                    f"mesh axes are {MESH_AXES}."
                )
        out.append((name, axes))
    return tuple(out)


def mesh_spec(logical: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Rules):
    """Maps logical dimension names to a mesh `PartitionSpec` for an array of `shape`.

    Each name takes the first rule for it whose mesh axes are still unused by the array; a
    dimension stays unsharded when no rule applies or the mesh axes do not divide its size.
    """
    table: dict[str, list] = {}
    for name, axes in rules:
        table.setdefault(name, []).append(axes)
    used: set[str] = set()
    out = []
    for dim, name in zip(shape, logical, strict=True):
        chosen = None
        for axes in table.get(name, []) if name is not None else []:
            axes_t = axes if isinstance(axes, tuple) else (axes,)
            axes_t = tuple(a for a in axes_t if a is not None and mesh.shape[a] > 1)
            if not axes_t or used & set(axes_t):
                continue
            if dim % math.prod(mesh.shape[a] for a in axes_t) == 0:
                chosen = axes_t[0] if len(axes_t) == 1 else axes_t
                used.update(axes_t)
                break
        out.append(chosen)
    return PartitionSpec(*out)


def _is_spec(x: Any) -> bool:
    return isinstance(x, PartitionSpec)


def shardings_of(boxed_abstract: Any, mesh: Mesh, rules: Rules) -> Any:
    """`NamedSharding`s for a tree of possibly `nn.LogicallyPartitioned` values.

    Returns a tree with the structure of `nn.unbox(boxed_abstract)`; unnamed leaves (scalars,
    biases, optimizer counts) are replicated.
    """
    specs = nn.get_partition_spec(boxed_abstract)
    values = nn.unbox(boxed_abstract)

    def one(spec, value):
        names = tuple(spec) + (None,) * (len(value.shape) - len(tuple(spec)))
        return NamedSharding(mesh, mesh_spec(names, value.shape, mesh, rules))

    return jax.tree.map(one, specs, values, is_leaf=_is_spec)


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
    """Sharding of a batch's leading axis (the rules' `batch` entry), other axes replicated."""
    for name, axes in rules:
        if name == BATCH:
            axes_t = axes if isinstance(axes, tuple) else (axes,)
            axes_t = tuple(a for a in axes_t if a is not None)
            return NamedSharding(mesh, PartitionSpec(axes_t or None))
    return NamedSharding(mesh, PartitionSpec())


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_divisor(mesh: Mesh, rules: Rules) -> int:
    """How many ways the global batch is split (its size must be a multiple)."""
    spec = batch_sharding(mesh, rules).spec
    axes = spec[0] if len(spec) else None
    if axes is None:
        return 1
    axes = axes if isinstance(axes, tuple) else (axes,)
    return math.prod(mesh.shape[a] for a in axes)


def sharded_abstract(
    init_fn: Callable[..., Any], rng: jax.Array, mesh: Mesh, rules: Rules
) -> tuple[Any, Any]:
    """(unboxed `ShapeDtypeStruct`s carrying shardings, `NamedSharding`s) of `init_fn(rng)`;
    nothing is computed (a restore target)."""
    boxed = jax.eval_shape(init_fn, rng)
    shardings = shardings_of(boxed, mesh, rules)
    return abstract_with_shardings(nn.unbox(boxed), shardings), shardings


def create_sharded(
    init_fn: Callable[..., Any], rng: jax.Array, mesh: Mesh, rules: Rules
) -> tuple[Any, Any]:
    """Runs `init_fn(rng)` as one jitted program whose outputs are born sharded.

    Args:
      init_fn: rng -> tree that may hold `nn.LogicallyPartitioned` boxes (e.g. a train state
        whose params come from `module.init`; optax states built from boxed params stay boxed).
      rng: PRNG key.
      mesh / rules: where the tree goes.

    Returns:
      (unboxed tree of sharded arrays, matching tree of `NamedSharding`s).
    """
    _, shardings = sharded_abstract(init_fn, rng, mesh, rules)
    tree = jax.jit(lambda r: nn.unbox(init_fn(r)), out_shardings=shardings)(rng)
    return tree, shardings


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
    """`jax.ShapeDtypeStruct`s carrying shardings (targets for AOT lowering and restores)."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def process_rows(sharding: NamedSharding, global_batch_size: int) -> tuple[int, int]:
    """The [start, stop) rows of a global batch that this process's devices hold."""
    slices = sharding.addressable_devices_indices_map((global_batch_size,)).values()
    starts = [(s[0].start or 0) if s else 0 for s in slices]
    stops = [(s[0].stop or global_batch_size) if s else global_batch_size for s in slices]
    return min(starts), max(stops)


def put_batch(
    batch: dict[str, np.ndarray], sharding: NamedSharding, global_batch_size: int
) -> dict[str, jax.Array]:
    """Assembles global arrays from this process's rows of the batch.

    Args:
      batch: this process's slice of the global batch, each array [B / num_processes, ...].
      sharding: the batch sharding (leading axis split over the data axes).
      global_batch_size: B.
    """
    return {
        k: jax.make_array_from_process_local_data(sharding, v, (global_batch_size,) + v.shape[1:])
        for k, v in batch.items()
    }
