"""Sampling on several devices: the weights replicated over a data mesh, each batch split.

`replicate(trained, devices)` puts a workdir's weights on every device of a 1-D ("data",) mesh;
`tasks.run` then hands the sampler its batch-sized inputs split over that mesh
(`split_batch`), and XLA runs each device's share of the batch in the same compiled program.
A batch that does not divide by the device count runs replicated (correct, not faster). Weights
that must be sharded because one device cannot hold them are a training-side feature
(`config.mesh.fsdp`); released LDM and Stable Diffusion weights fit one accelerator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ldm_jax.workdir.reader import TrainedLDM

DATA_AXIS = "data"


def replicate(trained: TrainedLDM, devices: Sequence[Any] | None = None) -> TrainedLDM:
    """A copy of `trained` whose weights live on all `devices` (default: the local ones)."""
    devices = list(jax.local_devices() if devices is None else devices)
    mesh = Mesh(np.asarray(devices), (DATA_AXIS,))
    everywhere = NamedSharding(mesh, PartitionSpec())
    return dataclasses.replace(
        trained,
        ae_params=jax.device_put(trained.ae_params, everywhere),
        ldm_params=jax.device_put(trained.ldm_params, everywhere),
    )


def mesh_of(params: Any) -> Mesh | None:
    """The data mesh `replicate` put `params` on, or None (one device)."""
    leaves = jax.tree.leaves(params)
    sharding = getattr(leaves[0], "sharding", None) if leaves else None
    if isinstance(sharding, NamedSharding) and DATA_AXIS in sharding.mesh.axis_names:
        return sharding.mesh
    return None


def split_batch(tree: Any, batch: int, mesh: Mesh | None) -> Any:
    """`tree`'s arrays with leading size `batch` split over `mesh` (others replicated on it).

    Unchanged without a mesh or when `batch` does not divide by its size.
    """
    if tree is None or mesh is None or batch % mesh.size:
        return tree
    split = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    everywhere = NamedSharding(mesh, PartitionSpec())

    def place(x: Any) -> Any:
        if not hasattr(x, "shape"):
            return x
        return jax.device_put(x, split if x.ndim and x.shape[0] == batch else everywhere)

    return jax.tree.map(place, tree)
