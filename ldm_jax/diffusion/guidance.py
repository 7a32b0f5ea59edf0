"""Classifier-free guidance (Ho & Salimans 2022) and guidance rescale (Lin et al. 2023).

Two ways to guide:
  * `sample(pair_fn, ..., guidance_scale=s, guidance_rescale=r)` where `pair_fn(x, t)` returns the
    pair (cond_output, uncond_output); `guidance_pair_fn` builds one from a conditional model with a
    single call on the doubled batch. `s` and `r` are traced: sweeping them does not recompile.
  * `classifier_free_guidance(model_fn, cond, uncond, s)`: an already-guided `eps_fn(x, t)`.
Guidance is applied to the raw model output (eps, x0 or v); being an affine combination with
weights summing to one, it commutes with the conversions between them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# (x [B, ...], t int32 [B], cond pytree with leading batch dim) -> output [B, ...]
ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]
# (x [B, ...], t int32 [B]) -> (cond_output [B, ...], uncond_output [B, ...])
PairFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def rescale_guided(
    guided: jax.Array, cond: jax.Array, guidance_rescale: float | jax.Array
) -> jax.Array:
    """Guidance rescale (Lin et al. 2023, sec. 3.4), as diffusers' `rescale_noise_cfg`.

    Rescales `guided` to the per-example standard deviation of `cond` and mixes:
    r * guided * std(cond) / std(guided) + (1 - r) * guided.

    Args:
        guided: [B, ...] the guided prediction.
        cond: [B, ...] the conditional prediction.
        guidance_rescale: r in [0, 1]; traced.

    Returns:
        float32 [B, ...]. An example whose guided output is constant is left unscaled.
    """
    axes = tuple(range(1, guided.ndim))
    std_cond = jnp.std(cond, axis=axes, keepdims=True)  # [B, 1, ...]
    std_guided = jnp.std(guided, axis=axes, keepdims=True)
    ratio = jnp.where(std_guided > 0, std_cond / jnp.where(std_guided > 0, std_guided, 1.0), 1.0)
    r = jnp.asarray(guidance_rescale, jnp.float32)
    return r * (guided * ratio) + (1.0 - r) * guided


def guide(
    cond: jax.Array,
    uncond: jax.Array,
    guidance_scale: float | jax.Array,
    guidance_rescale: float | jax.Array = 0.0,
) -> jax.Array:
    """cond + (s - 1) (cond - uncond) = uncond + s (cond - uncond), then optional rescale.

    Written so that s = 1 returns the conditional prediction exactly.

    Args:
        cond, uncond: [B, ...] conditional and unconditional model outputs.
        guidance_scale: s; a Python float or a traced scalar.
        guidance_rescale: r (0 disables it; a Python 0 skips the computation entirely).

    Returns:
        float32 [B, ...].
    """
    cond, uncond = cond.astype(jnp.float32), uncond.astype(jnp.float32)
    s = jnp.asarray(guidance_scale, jnp.float32)
    guided = cond + (s - 1.0) * (cond - uncond)
    if isinstance(guidance_rescale, (int, float)) and guidance_rescale == 0:
        return guided
    return rescale_guided(guided, cond, guidance_rescale)


def guidance_pair_fn(model_fn: ModelFn, cond: Any, uncond: Any) -> PairFn:
    """A `sample(..., guidance_scale=...)` model: (x, t) -> (cond_out, uncond_out).

    The model runs once per step on the doubled batch [x; x] with conditions [cond; uncond].

    Args:
        model_fn: (x, t, cond) -> output.
        cond: pytree of arrays with leading batch dim B.
        uncond: pytree of the same structure; leaves with leading dim 1 are broadcast to B.

    Raises:
        ValueError: if an uncond leaf matches neither B nor 1 along the batch axis.
    """

    def pair(c: jax.Array, u: jax.Array) -> jax.Array:
        c, u = jnp.asarray(c), jnp.asarray(u)
        if u.shape != c.shape:
            if u.shape[1:] != c.shape[1:] or u.shape[0] != 1:
                raise ValueError(f"uncond leaf {u.shape} does not match cond leaf {c.shape}.")
            u = jnp.broadcast_to(u, c.shape)
        return jnp.concatenate([c, u], axis=0)  # [2B, ...]

    both = jax.tree.map(pair, cond, uncond)

    def pair_fn(x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = model_fn(jnp.concatenate([x, x], axis=0), jnp.concatenate([t, t], axis=0), both)
        out_c, out_u = jnp.split(out.astype(jnp.float32), 2, axis=0)  # [B, ...] each
        return out_c, out_u

    return pair_fn


def classifier_free_guidance(
    model_fn: ModelFn,
    cond: Any,
    uncond: Any,
    guidance_scale: float | jax.Array,
    guidance_rescale: float | jax.Array = 0.0,
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Wraps a conditional model into a guided `eps_fn(x, t)` for `sample`.

    Equivalent to `sample(guidance_pair_fn(model_fn, cond, uncond), ..., guidance_scale=s)`.

    Args:
        model_fn: (x, t, cond) -> output (eps, x0 or v).
        cond: pytree of arrays with leading batch dim B.
        uncond: pytree of the same structure; leaves with leading dim 1 are broadcast to B.
        guidance_scale: s, a Python float or a (traced) jnp scalar.
        guidance_rescale: see `guide`.

    Returns:
        eps_fn(x [B, ...], t int32 [B]) -> float32 [B, ...].
    """
    pair_fn = guidance_pair_fn(model_fn, cond, uncond)

    def eps_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        return guide(*pair_fn(x, t), guidance_scale, guidance_rescale)

    return eps_fn
