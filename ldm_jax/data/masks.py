"""Random large inpainting masks, drawn inside the jitted train step.

The paper trains its inpainting model on the large masks of LaMa (Suvorov et al. 2022): thick
random strokes and large boxes that cover a large part of the image. This is a compact jax
version of that recipe: per image `boxes` axis-aligned boxes with sides of 20-60% of the image
and `strokes` polylines of `vertices` points with widths of 5-12% of the image. Drawn from a jax
key, so a resumed run draws the same masks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _one_mask(rng: jax.Array, size: int, boxes: int, strokes: int, vertices: int) -> jax.Array:
    """[size, size, 1] float32, 1 = masked (fill in)."""
    k_center, k_half, k_vert, k_width = jax.random.split(rng, 4)
    grid = jnp.arange(size, dtype=jnp.float32) + 0.5
    yy, xx = jnp.meshgrid(grid, grid, indexing="ij")
    p = jnp.stack([yy, xx], axis=-1)  # [S, S, 2]
    centers = jax.random.uniform(k_center, (boxes, 2)) * size
    halves = jax.random.uniform(k_half, (boxes, 2), minval=0.1, maxval=0.3) * size
    in_box = jnp.all(jnp.abs(p[None] - centers[:, None, None]) < halves[:, None, None], axis=-1)
    verts = jax.random.uniform(k_vert, (strokes, vertices, 2)) * size
    a = verts[:, :-1].reshape(-1, 2)  # [K, 2] segment starts
    b = verts[:, 1:].reshape(-1, 2)  # [K, 2] segment ends
    width = jax.random.uniform(k_width, (strokes,), minval=0.05, maxval=0.12) * size
    width = jnp.repeat(width, vertices - 1)  # [K]
    ab = (b - a)[:, None, None]  # [K, 1, 1, 2]
    ap = p[None] - a[:, None, None]  # [K, S, S, 2]
    t = jnp.sum(ap * ab, axis=-1) / jnp.maximum(jnp.sum(ab * ab, axis=-1), 1e-6)
    t = jnp.clip(t, 0.0, 1.0)  # [K, S, S]
    dist = jnp.linalg.norm(ap - t[..., None] * ab, axis=-1)  # [K, S, S]
    in_stroke = dist < width[:, None, None] / 2
    mask = jnp.any(in_box, axis=0) | jnp.any(in_stroke, axis=0)  # [S, S]
    return mask.astype(jnp.float32)[..., None]


def large_masks(
    rng: jax.Array, batch: int, size: int, boxes: int = 2, strokes: int = 3, vertices: int = 4
) -> jax.Array:
    """A batch of random large masks: float32 [batch, size, size, 1] in {0, 1}, 1 = fill in."""
    keys = jax.random.split(rng, batch)
    return jax.vmap(lambda k: _one_mask(k, size, boxes, strokes, vertices))(keys)
