"""Multi-head attention cores, softmax(Q K^T / sqrt(d)) V, chosen per backend and size.

* `"einsum"`: the plain formulation; materialises all [B, heads, Lq, Lk] logits at once.
* `"blocked"`: a few (batch, head) pairs at a time (`lax.map`, `_pairs_per_step`), queries
  in chunks of at most `QUERY_CHUNK` rows, with a custom VJP that saves only the log-sum-exp
  per query and recomputes the probabilities in the backward pass (the flash-attention
  recurrence at (batch, head, query-chunk) granularity). Every key of a row is in one block,
  so the softmax of a row is exact and needs no online rescaling. On XLA:CPU this is the fast
  path: each block's logits stay in cache and the activations saved for the backward pass are
  O(L) instead of O(L^2).
* `"cudnn"`: `jax.nn.dot_product_attention(implementation="cudnn")` (GPU, float16/bfloat16).
* `"pallas_flash"`: the Pallas TPU flash-attention kernel (TPU, sequences a multiple of 128).

`choose_implementation` picks one from the backend, dtype and sizes; `attention` runs it and
falls back to `"blocked"` or `"einsum"` where a kernel is unavailable. Softmax and its
statistics are always float32.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "einsum", "blocked", "cudnn", "pallas_flash")

# Below this many logits per (batch, head) the plain einsum is as fast and compiles faster.
SMALL_LOGITS = 64 * 64
# Query rows per forward block of the blocked kernel: a block's logits are QUERY_CHUNK x Lk
# float32.
QUERY_CHUNK = 1024
# Logits per block (query rows x Lk) when training (the forward that saves the log-sum-exp,
# and the backward): the backward holds several [rows, Lk] float32 arrays at once (P, P^T, dS,
# dS^T); at 2^19 (512 x 1024) the self-attention forward+backward at Lq = Lk = 1024, d = 8 ran
# 1.2x faster than with 1,024-row blocks (122 vs 147 ms, measured 2026-12-06). The inference
# forward is fastest with whole QUERY_CHUNK-row blocks (34 vs 44 ms).
TRAINING_BLOCK_LOGITS = 512 * 1024
# (batch, head) pairs per `lax.map` iteration: as many as keep one iteration's logits (pairs x
# query rows x Lk) within these budgets, a power of two, at most the cap. XLA:CPU fuses the
# inference forward's matmul-exp-sum-matmul chain, so its iterations may be large; the backward
# holds several unfused [rows, Lk] arrays per pair. Measured 2026-12-07 at batch 8, 8 heads
# (best of 15, ms, the earlier fixed 4 pairs forward / 1 pair backward -> this rule, three
# interleaved rounds): forward 1024x77 d=8 7.0-8.1 -> 6.1-6.3, 256x77 d=16 2.9-3.2 -> 1.9-2.5;
# forward+backward 256x256 d=16 20.8-21.7 -> 17.6-18.1, 256x77 8.9-9.3 -> 7.6-8.7; 1024x1024
# d=8 keeps 4 and 1 pairs (8 forward pairs or 2 backward pairs were no faster).
FORWARD_STEP_LOGITS = 1 << 22
TRAINING_FORWARD_STEP_LOGITS = 1 << 21
FORWARD_MAX_PAIRS = 16
BACKWARD_STEP_LOGITS = 1 << 19
BACKWARD_MAX_PAIRS = 8


_OVERRIDES: list[str] = []


@contextlib.contextmanager
def override(implementation: str) -> Iterator[None]:
    """Within the block, "auto" means `implementation` (read when a function is traced).

    The benchmarks count FLOPs on the loop-free "einsum" form: XLA's cost analysis counts a
    `lax.map` body once, not once per iteration.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention: unknown implementation {implementation!r}.")
    _OVERRIDES.append(implementation)
    try:
        yield
    finally:
        _OVERRIDES.pop()


def choose_implementation(
    backend: str, q_len: int, k_len: int, head_dim: int, dtype: jnp.dtype
) -> str:
    """The attention implementation for a backend, sequence lengths, head width and dtype.

    Args:
      backend: `jax.default_backend()`: "cpu", "gpu"/"cuda"/"rocm" or "tpu".
      q_len: query positions Lq.
      k_len: key positions Lk.
      head_dim: width of each head d.
      dtype: compute dtype of q, k and v.

    Returns:
      One of "einsum", "blocked", "cudnn", "pallas_flash".
    """
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if backend in ("gpu", "cuda") and half and head_dim % 8 == 0 and head_dim <= 128:
        return "cudnn"
    if backend == "tpu" and q_len % 128 == 0 and k_len % 128 == 0:
        return "pallas_flash"
    if q_len * k_len <= SMALL_LOGITS:
        return "einsum"
    return "blocked"


def einsum_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Plain attention. q [B, Lq, h, d], k/v [B, Lk, h, d] -> [B, Lq, h, d]."""
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # [B, h, Lq, Lk]
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def _to_pairs(x: jax.Array) -> jax.Array:
    """[B, L, h, d] -> [B*h, L, d]."""
    b, n, h, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b * h, n, d)


def _from_pairs(x: jax.Array, b: int) -> jax.Array:
    """[B*h, L, d] -> [B, L, h, d]."""
    bh, n, d = x.shape
    return x.reshape(b, bh // b, n, d).transpose(0, 2, 1, 3)


def _query_chunks(q_len: int, max_rows: int | None = None) -> int:
    """Equal query chunks of at most `max_rows` (QUERY_CHUNK) rows and at least a quarter of that.

    One chunk (the whole sequence) when no such split exists, e.g. for a prime length.
    """
    max_rows = QUERY_CHUNK if max_rows is None else max_rows
    n = -(-q_len // max_rows)
    while q_len // n >= max_rows // 4:
        if q_len % n == 0:
            return n
        n += 1
    return 1


def _training_rows(k_len: int) -> int:
    """Query rows per block when training: TRAINING_BLOCK_LOGITS / Lk, in [1, QUERY_CHUNK]."""
    return max(1, min(QUERY_CHUNK, TRAINING_BLOCK_LOGITS // k_len))


def _pairs_per_step(num_pairs: int, rows: int, k_len: int, budget: int, max_pairs: int) -> int:
    """Pairs per `lax.map` iteration: the largest power of two <= max_pairs within the budget.

    At least 1 and at most `num_pairs`; `lax.map` runs a remainder the power does not divide.
    """
    pairs = 1
    while pairs * 2 <= max_pairs and pairs * 2 * rows * k_len <= budget:
        pairs *= 2
    return max(1, min(pairs, num_pairs))


def _map_pairs(fn, xs, pairs: int):
    """`lax.map` over the leading (pair) axis, `pairs` per iteration.

    One pair per iteration is a plain map: `batch_size=1` would vmap the body over an axis of
    one, and XLA:CPU's batched matmuls are slower than the unbatched ones.
    """
    return jax.lax.map(fn, xs, batch_size=pairs if pairs > 1 else None)


def _logits(q: jax.Array, k: jax.Array, scale: float) -> jax.Array:
    """[n, d] x [m, d] -> [n, m] float32 scaled logits."""
    return jnp.matmul(q, k.T, preferred_element_type=jnp.float32) * scale


def _fwd_block(q: jax.Array, k: jax.Array, v: jax.Array, scale: float, with_lse: bool):
    """One block: q [n, d], k/v [m, d] -> (out [n, d], lse [n] float32 or None).

    The probabilities are normalised before the second matmul: XLA:CPU then fuses exp and
    division into one producer, about 1.4x faster than dividing the [n, d] output afterwards.
    """
    s = _logits(q, k, scale)  # [n, m]
    m = jnp.max(s, axis=-1, keepdims=True)
    p = jnp.exp(s - m)
    denom = jnp.sum(p, axis=-1, keepdims=True)  # [n, 1]
    out = jnp.matmul((p / denom).astype(v.dtype), v, preferred_element_type=jnp.float32)
    lse = (m + jnp.log(denom))[:, 0] if with_lse else None
    return out.astype(q.dtype), lse


def _bwd_block(q, k, v, out, lse, dout, scale: float):
    """Gradients of one block, probabilities recomputed from the saved log-sum-exp.

    dK and dV come from the key-major probabilities P^T [m, n] and dQ from the query-major
    P [n, m]: recomputing P twice is cheaper on XLA:CPU than a matmul contracting the leading
    axis of an [n, m] operand (measured 1.7x faster for the whole block at n = m = 1024, d = 8).
    """
    f32 = functools.partial(jnp.matmul, preferred_element_type=jnp.float32)
    delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # [n]
    pt = jnp.exp(_logits(k, q, scale) - lse[None, :])  # [m, n] float32
    dst = (pt * (f32(v, dout.T) - delta[None, :]) * scale).astype(q.dtype)  # [m, n]
    dv = f32(pt.astype(dout.dtype), dout)  # [m, d]
    dk = f32(dst, q)  # [m, d]
    p = jnp.exp(_logits(q, k, scale) - lse[:, None])  # [n, m] float32
    ds = (p * (f32(dout, v.T) - delta[:, None]) * scale).astype(q.dtype)  # [n, m]
    return f32(ds, k), dk, dv  # dq [n, d], dk [m, d], dv [m, d]


def _pair_fwd(q, k, v, scale: float, chunks: int, with_lse: bool):
    """One (batch, head) pair: q [Lq, d], k/v [Lk, d] -> (out [Lq, d], lse [Lq] or None)."""
    if chunks == 1:
        return _fwd_block(q, k, v, scale, with_lse)
    qc = q.reshape(chunks, -1, q.shape[-1])
    out, lse = jax.lax.map(lambda c: _fwd_block(c, k, v, scale, with_lse), qc)
    return out.reshape(q.shape), None if lse is None else lse.reshape(-1)


def _pair_bwd(q, k, v, out, lse, dout, scale: float, chunks: int):
    """Gradients of one pair; dk and dv are summed over the query chunks."""
    if chunks == 1:
        return _bwd_block(q, k, v, out, lse, dout, scale)
    split = lambda a: a.reshape(chunks, -1, *a.shape[1:])

    def body(carry, xs):
        dq, dk, dv = _bwd_block(xs[0], k, v, xs[1], xs[2], xs[3], scale)
        return (carry[0] + dk, carry[1] + dv), dq

    zeros = jnp.zeros(k.shape, jnp.float32)
    (dk, dv), dq = jax.lax.scan(body, (zeros, zeros), tuple(map(split, (q, out, lse, dout))))
    return dq.reshape(q.shape), dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _blocked(q: jax.Array, k: jax.Array, v: jax.Array, batch: int) -> jax.Array:
    return _blocked_impl(q, k, v, batch, with_lse=False)[0]


def _blocked_impl(q, k, v, batch: int, with_lse: bool):
    """Forward over all pairs; the log-sum-exp only when a backward pass will need it."""
    scale = q.shape[-1] ** -0.5
    chunks = _query_chunks(q.shape[1], _training_rows(k.shape[1]) if with_lse else None)
    qp, kp, vp = map(_to_pairs, (q, k, v))  # [B*h, L, d]
    rows, k_len = q.shape[1] // chunks, k.shape[1]
    budget = TRAINING_FORWARD_STEP_LOGITS if with_lse else FORWARD_STEP_LOGITS
    pairs = _pairs_per_step(qp.shape[0], rows, k_len, budget, FORWARD_MAX_PAIRS)
    out, lse = _map_pairs(lambda a: _pair_fwd(*a, scale, chunks, with_lse), (qp, kp, vp), pairs)
    return _from_pairs(out, batch), (qp, kp, vp, out, lse)


def _blocked_fwd(q, k, v, batch):
    return _blocked_impl(q, k, v, batch, with_lse=True)


def _blocked_bwd(batch, residuals, dout):
    qp, kp, vp, out, lse = residuals
    scale = qp.shape[-1] ** -0.5
    chunks = _query_chunks(qp.shape[1], _training_rows(kp.shape[1]))
    rows, k_len = qp.shape[1] // chunks, kp.shape[1]
    grads = _map_pairs(
        lambda a: _pair_bwd(*a, scale, chunks),
        (qp, kp, vp, out, lse, _to_pairs(dout)),
        _pairs_per_step(qp.shape[0], rows, k_len, BACKWARD_STEP_LOGITS, BACKWARD_MAX_PAIRS),
    )
    return tuple(
        _from_pairs(g.astype(r.dtype), batch) for g, r in zip(grads, (qp, kp, vp), strict=True)
    )


_blocked.defvjp(_blocked_fwd, _blocked_bwd)


def blocked_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Memory-lean attention (see the module docstring). q [B, Lq, h, d], k/v [B, Lk, h, d]."""
    return _blocked(q, k, v, q.shape[0])


def _pallas_flash(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """The Pallas TPU flash-attention kernel ([B, h, L, d] layout inside)."""
    from jax.experimental.pallas.ops.tpu import flash_attention as fa  # TPU-only module

    t = lambda a: a.transpose(0, 2, 1, 3)
    out = fa.flash_attention(t(q), t(k), t(v), sm_scale=q.shape[-1] ** -0.5)
    return t(out)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, implementation: str = "auto") -> jax.Array:
    """softmax(Q K^T / sqrt(d)) V with the softmax in float32.

    Args:
      q: [B, Lq, heads, d] queries.
      k: [B, Lk, heads, d] keys.
      v: [B, Lk, heads, d] values.
      implementation: one of `IMPLEMENTATIONS`; "auto" uses `choose_implementation`.

    Returns:
      [B, Lq, heads, d] in q's dtype.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention: unknown implementation {implementation!r}.")
    if implementation == "auto" and _OVERRIDES:
        implementation = _OVERRIDES[-1]
    if implementation == "auto":
        implementation = choose_implementation(
            jax.default_backend(), q.shape[1], k.shape[1], q.shape[-1], q.dtype
        )
    if implementation == "cudnn":
        try:
            return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
        except (NotImplementedError, RuntimeError, ValueError):
            implementation = "blocked"
    if implementation == "pallas_flash":
        try:
            return _pallas_flash(q, k, v)
        except (ImportError, NotImplementedError, RuntimeError, ValueError):
            implementation = "blocked"
    if implementation == "blocked":
        return blocked_attention(q, k, v)
    return einsum_attention(q, k, v)
