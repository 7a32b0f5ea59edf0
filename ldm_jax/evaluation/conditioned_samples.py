"""One sample per condition, in fixed-size batches: what every task metric scores."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.config import builders
from ldm_jax.sampling.generate import make_sampler
from ldm_jax.workdir.reader import TrainedLDM


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    """Pads the leading axis to `size` by repeating its last row."""
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


def sample_per_condition(
    trained: TrainedLDM,
    cond: np.ndarray | None,
    uncond: np.ndarray | None,
    *,
    sampler: str,
    steps: int,
    guidance: float,
    eta: float,
    seed: int = 0,
    batch_size: int = 64,
    strength: float = 1.0,
    latents: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Images [N, H, W, C] float32 in [-1, 1], one per row of `cond` [N, ...] (None for an
    unconditional model), guided against `uncond` [1, ...] (None: unguided).

    `latents` are per-row scaled latents of `make_sampler`'s sample function ("x_init" [N, h, w,
    c] with `strength` < 1 for img2img; "mask" [N, h, w, 1] and "x_known" for masked sampling).
    One batch shape compiles: the last batch is padded by repeating its last row; batch i draws
    its noise from fold_in(PRNGKey(seed), i).
    """
    latents = latents or {}
    rows = [a for a in (cond, *latents.values()) if a is not None]
    if not rows:
        raise ValueError("sample_per_condition: give conditions or per-row latents.")
    n = len(rows[0])
    sample = make_sampler(trained.config, sampler, steps, strength=strength)
    h, w, c = builders.latent_shape(trained.config)
    b = min(batch_size, n)
    out = []
    for i, start in enumerate(range(0, n, b)):
        count = min(b, n - start)

        def batch(a: np.ndarray | None, start: int = start) -> np.ndarray | None:
            return None if a is None else _pad(a[start : start + b], b)

        images = sample(
            trained.ae_params,
            trained.ldm_params,
            batch(cond),
            uncond,
            jax.random.fold_in(jax.random.PRNGKey(seed), i),
            jnp.float32(guidance),
            jnp.float32(eta),
            jnp.float32(trained.scale_factor),
            shape=(b, h, w, c),
            **{k: batch(v) for k, v in latents.items()},
        )
        out.append(np.clip(np.asarray(images, np.float32)[:count], -1.0, 1.0))
    return np.concatenate(out)
