"""Microbenchmarks of the two layers that XLA:CPU handled worst: attention and GroupNorm+SiLU.

attention: the U-Net's first-level shapes (batch 8, 1,024 tokens, 8 heads of 8; self-attention
  and cross-attention to 77 tokens), forward and forward+backward, for each implementation.
groupnorm: GroupNorm(32)+SiLU on [8, 32, 32, 64] float32, forward and forward+backward, for our
  `GroupNorm32` and flax's `nn.GroupNorm`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.benchmarks.model_benches import FRAMEWORK
from ldm_jax.benchmarks.presets import ATTENTION_KEY_LENS, ATTENTION_SHAPE, GROUPNORM_SHAPE
from ldm_jax.benchmarks.timing import record, time_iterations
from ldm_jax.benchmarks.xla_measure import compile_timed, matmul_peak_flops, xla_threads
from ldm_jax.models import attention_kernels
from ldm_jax.models.layers import GroupNorm32


def _attention_flops(b: int, lq: int, lk: int, h: int, d: int, backward: bool) -> float:
    """Matmul FLOPs: 2 products of 2*Lq*Lk*d per head forward, 4 more backward."""
    fwd = 2 * 2 * b * h * lq * lk * d
    return fwd * 3 if backward else fwd


def _timed(bench, fn, args, repeats, flops, **extra) -> dict[str, Any]:
    compiled, compile_s = compile_timed(jax.jit(fn), *args)
    times = time_iterations(lambda: jax.block_until_ready(compiled(*args)), repeats)
    b = args[0].shape[0]
    return record(
        bench,
        FRAMEWORK,
        "micro",
        b,
        "float32",
        times,
        compile_s,
        b,
        "example",
        flops,
        matmul_peak_flops("float32"),
        xla_threads(),
        **extra,
    )


def bench_attention(repeats: int, batch: int = 0) -> list[dict[str, Any]]:
    """Every implementation that runs here (blocked, einsum, jax.nn.dot_product_attention)."""
    s = ATTENTION_SHAPE
    b, lq, h, d = batch or s["batch"], s["q_len"], s["heads"], s["head_dim"]
    impls = {
        "blocked": attention_kernels.blocked_attention,
        "einsum": attention_kernels.einsum_attention,
        "jax.nn.dot_product_attention": jax.nn.dot_product_attention,
    }
    rng = np.random.default_rng(0)
    results = []
    for kind, lk in ATTENTION_KEY_LENS.items():
        q = jnp.asarray(rng.normal(size=(b, lq, h, d)), jnp.float32)
        k, v = (jnp.asarray(rng.normal(size=(b, lk, h, d)), jnp.float32) for _ in range(2))
        for name, fn in impls.items():
            grad = lambda q, k, v, fn=fn: jax.grad(lambda *a: jnp.sum(fn(*a) ** 2), (0, 1, 2))(
                q, k, v
            )
            for mode, f in (("forward", fn), ("forward_backward", grad)):
                flops = _attention_flops(b, lq, lk, h, d, mode != "forward")
                results.append(
                    _timed(
                        f"attention_{kind}_{mode}",
                        f,
                        (q, k, v),
                        repeats,
                        flops,
                        implementation=name,
                        q_len=lq,
                        k_len=lk,
                        heads=h,
                        head_dim=d,
                    )
                )
    return results


def bench_groupnorm(repeats: int, batch: int = 0) -> list[dict[str, Any]]:
    """GroupNorm(32)+SiLU: ours (`GroupNorm32`) against flax's `nn.GroupNorm`."""
    shape = (batch or GROUPNORM_SHAPE[0], *GROUPNORM_SHAPE[1:])
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    modules = {"GroupNorm32": GroupNorm32(32, 1e-5), "flax.nn.GroupNorm": nn.GroupNorm(32)}
    results = []
    for name, module in modules.items():
        params = module.init(jax.random.PRNGKey(0), x)
        fwd = lambda p, x, m=module: nn.silu(m.apply(p, x))
        grad = lambda p, x, f=fwd: jax.grad(lambda p, x: jnp.sum(f(p, x) ** 2), (0, 1))(p, x)
        for mode, f in (("forward", fwd), ("forward_backward", grad)):
            args = (x, params)
            results.append(
                _timed(
                    f"groupnorm_silu_{mode}",
                    lambda x, p, f=f: f(p, x),
                    args,
                    repeats,
                    None,
                    implementation=name,
                    shape=list(shape),
                )
            )
    return results
