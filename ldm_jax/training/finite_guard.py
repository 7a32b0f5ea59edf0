"""Non-finite losses and gradients: find the first bad tensor inside the step, and skip the update.

A train step reports, as the int32 metric `nonfinite`, which tensor of the update was the first
non-finite one: -1 when all are finite, 0 for the loss, i for the i-th gradient leaf (in
`jax.tree_util` order; `tensor_names` gives the names). `run_loop` turns a report into an error
naming the step and the tensor (`on_nonfinite="stop"`, the default), or, with
`on_nonfinite="skip"`, the step keeps the previous parameters and optimizer state (`guard`) and the
loop logs the skipped step; the step counter and the random key still advance, so the data order
and the rest of the run stay the same as without the bad batch.
"""

from __future__ import annotations

from typing import Any, TypeVar

import jax
import jax.numpy as jnp

NONFINITE_METRIC = "nonfinite"  # the step's report: -1, or the index into `tensor_names`

State = TypeVar("State")


def first_nonfinite(loss: jax.Array, grads: Any) -> jax.Array:
    """int32 scalar: -1 when `loss` and every leaf of `grads` are finite, 0 when the loss is
    not, else 1 + the index of the first gradient leaf holding a NaN or an infinity."""
    flags = [~jnp.isfinite(loss).all()] + [
        ~jnp.isfinite(g).all() for g in jax.tree.leaves(grads)
    ]  # one reduction per tensor
    flags = jnp.stack(flags)
    return jnp.where(flags.any(), jnp.argmax(flags), -1).astype(jnp.int32)


def tensor_names(grads_like: Any) -> tuple[str, ...]:
    """Names of the tensors `first_nonfinite` indexes: "loss", then "grad of <path>" for each
    leaf of a tree with the gradients' structure (e.g. the parameters)."""
    leaves = jax.tree_util.tree_flatten_with_path(grads_like)[0]
    return ("loss",) + tuple(f"grad of {_path(path)}" for path, _ in leaves)


def _path(path: tuple[Any, ...]) -> str:
    parts = []
    for key in path:
        name = getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))
        parts.append(str(name))
    return "/".join(parts)


def guard(state: State, new_state: State, report: jax.Array, skip: bool) -> State:
    """`new_state`, or with `skip` and a non-finite report, `state` with only its step counter
    and random key advanced (both states must have `step` and `rng` fields)."""
    if not skip:
        return new_state
    skipped = state.replace(step=new_state.step, rng=new_state.rng)
    return jax.lax.cond(report >= 0, lambda: skipped, lambda: new_state)
