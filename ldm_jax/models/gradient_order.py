"""Computing a block's parameter gradients as soon as its backward pass reaches it.

XLA:CPU's scheduler places many parameter-gradient reductions (a Dense layer's bias gradient
is the sum of its output gradient over all positions, a norm's scale gradient likewise) at the
end of the backward pass, next to the optimizer update that reads them. Each such reduction
keeps a whole activation gradient alive until then: on the issue-12 U-Net train step
(sd_small_cpu, batch 8) about 300 MB of the 1.03 GB live at the peak were activation gradients
waiting for a reduction of a few KB. An optimisation barrier cannot pin the order down (XLA:CPU
removes barriers before scheduling), so `early_param_grads` adds a data dependency: the block's
input gradients get a zero-valued term, `0 * sum(max(g))` over the block's parameter gradients
g, so the next block's backward pass cannot start before this block's parameter gradients
exist. The gradients are unchanged (except that a NaN or infinite parameter gradient now also
makes the input gradients NaN, which a diverged step is anyway), and the extra work is one
pass over the block's parameter gradients. With the GEGLU recomputation in
`attention.FeedForward`, the step's XLA temporaries fell from 915 to 720 MB (2026-12-07).

Applied on the CPU backend only: the GPU and TPU schedulers were not measured, and there the
dependency would also hold each block's input gradients back until any cross-device reduction
of its parameter gradients has finished.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def zero_reading(tree: Any) -> jax.Array | None:
    """A float32 zero computed from every floating leaf of `tree` (`0 * sum(max(leaf))`), or None.

    XLA does not fold `0 * x` (x may be NaN or infinite), so whatever adds this zero depends on
    every leaf. `max` rather than `sum`: XLA fused a sum of sums into the leaf's own reduction,
    which then ran late again.
    """
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    if not leaves:
        return None
    return sum(jnp.max(x).astype(jnp.float32) for x in leaves) * 0.0


def add_zero(tree: Any, zero: jax.Array | None) -> Any:
    """`tree` with `zero` (from `zero_reading`) added to each floating leaf; others unchanged."""
    if zero is None:
        return tree

    def add(x: Any) -> Any:
        if jnp.issubdtype(x.dtype, jnp.inexact):
            return x + zero.astype(x.dtype)
        return x

    return jax.tree_util.tree_map(add, tree)


def _after_param_grads(vjp_fn: Callable[..., Any], out_grad: Any) -> tuple[Any, ...]:
    """Backward rule: the block's vjp, its input gradients tied to its parameter gradients."""
    param_grads, *input_grads = vjp_fn(out_grad)
    return (param_grads, *add_zero(input_grads, zero_reading(param_grads)))


def early_param_grads(block: nn.Module, num_static: int = 0) -> Callable[..., Any]:
    """`block` as a callable whose backward pass yields its parameter gradients first.

    The forward pass and every gradient are those of `block(*args)`; only the order in which
    XLA computes the backward pass changes (see the module docstring). The block keeps its name
    and parameter paths. On a backend other than CPU (`jax.default_backend()` when traced) the
    block is called as it is.

    Args:
      block: a Flax module instance, created in the calling module's compact `__call__`.
      num_static: how many trailing positional arguments are static Python values (e.g.
        `deterministic`); the others are arrays or None and get gradients.

    Returns:
      A function of the block's positional call arguments.
    """

    def call(*args: Any) -> Any:
        if jax.default_backend() != "cpu":
            return block(*args)
        split = len(args) - num_static
        arrays, static = args[:split], args[split:]

        def apply(module: nn.Module, *inputs: Any) -> Any:
            return module(*inputs, *static)

        def forward(module: nn.Module, *inputs: Any) -> Any:
            return nn.vjp(apply, module, *inputs)

        lifted = nn.custom_vjp(apply, forward_fn=forward, backward_fn=_after_param_grads)
        return lifted(block, *arrays)

    return call
