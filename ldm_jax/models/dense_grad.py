"""A `dot_general` for `nn.Dense` whose kernel gradient reads a transposed copy of the inputs.

A Dense layer y = x W over N positions (x [..., D], W [D, F]) has the kernel gradient
dW = x^T dy, a matmul that contracts the leading (position) axis of both operands. XLA:CPU in
jaxlib 0.10 hands it to YNNPACK as is, and YNNPACK is slow at contracting the leading axis of
its left operand: for the U-Net's token-major layers with few input features, e.g.
[8, 1024, 64] -> 512 (the sd_small_cpu feed-forward), the backward pass took 18.6 ms against
7.6 ms when x^T [D, N] is first written out as its own (2 MB) array, and 64 -> 64 (attention
projections) 2.6 against 1.3 ms (2026-12-08, 2 cores). `dense_dot_general` is that: the same
product as `lax.dot_general`, with a custom VJP that materialises x^T for dW; dx is the usual
dy W^T.

The custom VJP is used on the CPU backend only, for the plain Dense contraction (last axis of
x with the first of a 2-D kernel, no batch dimensions); any other call, and other backends
(not measured here; their compilers choose their own operand layouts), get `lax.dot_general`
itself. The forward
value is the same computation; the gradients agree with `lax.dot_general`'s up to float
summation order.

Under `jax.checkpoint` the custom VJP is one opaque call that a policy saving matmul outputs
(`dots_with_no_batch_dims_saveable`) does not recognise as a dot. Its output is therefore named
`OUTPUT_NAME` (`jax.ad_checkpoint.checkpoint_name`, an identity outside remat), and
`dots_saveable_policy` saves both the dots and these outputs: the U-Net's "dots" remat keeps
what it kept before.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.ad_checkpoint import checkpoint_name

OUTPUT_NAME = "dense_output"


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dense(x: jax.Array, w: jax.Array, precision: Any) -> jax.Array:
    """x [..., D] @ w [D, F] -> [..., F]."""
    return lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


def _dense_fwd(x: jax.Array, w: jax.Array, precision: Any):
    return _dense(x, w, precision), (x, w)


def _dense_bwd(precision: Any, residuals, dy: jax.Array):
    x, w = residuals
    dx = lax.dot_general(dy, w, (((dy.ndim - 1,), (1,)), ((), ())), precision=precision)
    x_t = x.reshape(-1, x.shape[-1]).T  # [D, N], written out as its own array
    dw = jnp.matmul(x_t, dy.reshape(-1, dy.shape[-1]), precision=precision)  # [D, F]
    return dx.astype(x.dtype), dw.astype(w.dtype)


_dense.defvjp(_dense_fwd, _dense_bwd)


def _is_plain_dense(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any) -> bool:
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    return (
        rhs.ndim == 2
        and not lhs_batch
        and not rhs_batch
        and tuple(lhs_contract) == (lhs.ndim - 1,)
        and tuple(rhs_contract) == (0,)
    )


def dense_dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers: Any,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """`lax.dot_general` with the fast kernel gradient above for a Dense layer on CPU.

    A drop-in for `nn.Dense(dot_general=...)`: same arguments, same result.
    """
    if (
        preferred_element_type is None
        and jax.default_backend() == "cpu"
        and _is_plain_dense(lhs, rhs, dimension_numbers)
    ):
        return checkpoint_name(_dense(lhs, rhs, precision), OUTPUT_NAME)
    return lax.dot_general(
        lhs,
        rhs,
        dimension_numbers,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def dots_saveable_policy() -> Any:
    """A remat policy saving matmul outputs without batch dimensions and the Dense outputs above."""
    policies = jax.checkpoint_policies
    return policies.save_from_both_policies(
        policies.dots_with_no_batch_dims_saveable, policies.save_only_these_names(OUTPUT_NAME)
    )
