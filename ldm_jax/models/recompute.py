"""Recomputing a cheap function in the backward pass, when the backward pass reaches it.

`jax.checkpoint` keeps a function's inputs instead of its intermediates and recomputes them for
the backward pass; an optimisation barrier is meant to keep XLA from moving that recomputation.
XLA:CPU removes the barriers before it schedules the program, and its memory-optimised
scheduler then hoists the recomputation towards the forward pass: on the issue-12 U-Net train
step (sd_small_cpu, batch 8) the recomputed feed-forward projection and GELU of each transformer
block were live for most of the backward pass, so a `jax.checkpoint` around them saved 17 MB of
the step's 660 MB of XLA temporaries; with `recompute_in_backward` they saved 142 MB (518 MB),
but the step ran 5-16% slower (the recomputed matmuls), so the U-Net uses it only where the
recomputation is element-wise (`layers.group_norm_silu`). Measured 2026-12-07.

`recompute_in_backward` makes the recomputation wait with a data dependency instead, as
`gradient_order.early_param_grads` does for parameter gradients: the saved inputs get a
zero-valued term that reads the incoming output gradient, so the recomputation cannot start
before the backward pass has produced that gradient. The values and gradients are those of the
function (a NaN or infinite output gradient also makes the recomputed inputs NaN, which a
diverged step is anyway). On other backends it is `jax.checkpoint`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax

from ldm_jax.models.gradient_order import add_zero, zero_reading


def _tied_recompute(fn: Callable[..., Any], static_argnums: tuple[int, ...]) -> Callable[..., Any]:
    """`fn` as a custom VJP that saves its array arguments and recomputes in the backward."""

    def merged(static: Sequence[Any], arrays: Sequence[Any]) -> list[Any]:
        static_it, array_it = iter(static), iter(arrays)
        count = len(static) + len(arrays)
        return [next(static_it) if i in static_argnums else next(array_it) for i in range(count)]

    @functools.partial(jax.custom_vjp, nondiff_argnums=static_argnums)
    def wrapped(*args: Any) -> Any:
        return fn(*args)

    def forward(*args: Any) -> tuple[Any, tuple[Any, ...]]:
        saved = tuple(a for i, a in enumerate(args) if i not in static_argnums)
        return fn(*args), saved

    def backward(*rest: Any) -> tuple[Any, ...]:
        static, saved, out_grad = rest[:-2], rest[-2], rest[-1]
        tied = add_zero(saved, zero_reading(out_grad))  # waits for the output gradient
        _, vjp_fn = jax.vjp(lambda *arrays: fn(*merged(static, arrays)), *tied)
        return vjp_fn(out_grad)

    wrapped.defvjp(forward, backward)
    return wrapped


def recompute_in_backward(
    fn: Callable[..., Any], static_argnums: tuple[int, ...] = ()
) -> Callable[..., Any]:
    """`fn`, keeping only its inputs for the backward pass and recomputing the rest there.

    Use it for cheap functions whose intermediates are large (a GroupNorm and SiLU, a GELU);
    see the module docstring for why this is not plain `jax.checkpoint` on XLA:CPU. The backend
    is read when the returned function is traced (`jax.default_backend()`).

    Args:
      fn: a function of arrays (pytrees of arrays, or None) and static Python values.
      static_argnums: positions of the static arguments (ints, floats, strings): no gradient.

    Returns:
      A function with `fn`'s signature, values and gradients.
    """
    tied = _tied_recompute(fn, static_argnums)
    checkpointed = jax.checkpoint(fn, static_argnums=static_argnums)

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        if jax.default_backend() == "cpu":
            return tied(*args)
        return checkpointed(*args)

    return call
