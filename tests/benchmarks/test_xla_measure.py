"""FLOPs from XLA's cost analysis count every attention product, even through the blocked
kernel's loop and after the function was traced with it."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ldm_jax.benchmarks.xla_measure import xla_flops
from ldm_jax.models import attention_kernels as ak


def test_xla_flops_counts_attention_matmuls_after_a_blocked_trace():
    b, lq, lk, h, d = 2, 256, 256, 4, 8
    q = jnp.ones((b, lq, h, d))
    k = v = jnp.ones((b, lk, h, d))
    fn = lambda q, k, v: ak.attention(q, k, v)  # "auto": blocked here
    jax.jit(fn).lower(q, k, v)  # a cached trace with the loop, as a benchmark leaves behind
    matmuls = 2 * 2 * b * h * lq * lk * d  # Q K^T and P V
    flops = xla_flops(fn, q, k, v)
    # The count also has the softmax's elementwise work (a few ops per logit), never less.
    assert matmuls <= flops <= matmuls + 10 * b * h * lq * lk
