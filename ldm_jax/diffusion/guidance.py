"""Classifier-free guidance (Ho & Salimans 2022) as an `eps_fn` wrapper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# (x [B, ...], t int32 [B], cond pytree with leading batch dim) -> eps [B, ...]
ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def classifier_free_guidance(
    model_fn: ModelFn,
    cond: Any,
    uncond: Any,
    guidance_scale: float | jax.Array,
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Wraps a conditional model into a guided `eps_fn(x, t)` for `sample`.

    The model runs once per step on the doubled batch [x; x] with conditions [cond; uncond], and
    the result is eps_c + (s - 1) (eps_c - eps_u) = eps_u + s (eps_c - eps_u), written so that
    s = 1 returns the conditional prediction exactly.

    Args:
        model_fn: (x, t, cond) -> eps.
        cond: pytree of arrays with leading batch dim B.
        uncond: pytree of the same structure; leaves with leading dim 1 are broadcast to B.
        guidance_scale: s, a Python float or a (traced) jnp scalar.

    Returns:
        eps_fn(x [B, ...], t int32 [B]) -> float32 [B, ...].
    """

    def pair(c: jax.Array, u: jax.Array) -> jax.Array:
        c, u = jnp.asarray(c), jnp.asarray(u)
        if u.shape != c.shape:
            if u.shape[1:] != c.shape[1:] or u.shape[0] != 1:
                raise ValueError(f"uncond leaf {u.shape} does not match cond leaf {c.shape}.")
            u = jnp.broadcast_to(u, c.shape)
        return jnp.concatenate([c, u], axis=0)  # [2B, ...]

    both = jax.tree.map(pair, cond, uncond)

    def eps_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        out = model_fn(jnp.concatenate([x, x], axis=0), jnp.concatenate([t, t], axis=0), both)
        eps_c, eps_u = jnp.split(out.astype(jnp.float32), 2, axis=0)  # [B, ...] each
        scale = jnp.asarray(guidance_scale, jnp.float32)
        return eps_c + (scale - 1.0) * (eps_c - eps_u)

    return eps_fn
