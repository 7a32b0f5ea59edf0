"""One sample per condition, in fixed-size batches: what every task metric scores."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.config import builders
from ldm_jax.sampling.generate import make_sampler
from ldm_jax.workdir.reader import TrainedLDM


def sample_per_condition(
    trained: TrainedLDM,
    cond: np.ndarray,
    uncond: np.ndarray | None,
    *,
    sampler: str,
    steps: int,
    guidance: float,
    eta: float,
    seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:
    """Images [N, H, W, C] float32 in [-1, 1], one per row of `cond` [N, ...], guided against
    `uncond` [1, ...]. One batch shape compiles: the last batch is padded by repeating its last
    condition; batch i draws its noise from fold_in(PRNGKey(seed), i)."""
    sample = make_sampler(trained.config, sampler, steps)
    h, w, c = builders.latent_shape(trained.config)
    b = min(batch_size, len(cond))
    out = []
    for i, start in enumerate(range(0, len(cond), b)):
        chunk = cond[start : start + b]
        n = len(chunk)
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)])
        images = sample(
            trained.ae_params,
            trained.ldm_params,
            chunk,
            uncond,
            jax.random.fold_in(jax.random.PRNGKey(seed), i),
            jnp.float32(guidance),
            jnp.float32(eta),
            jnp.float32(trained.scale_factor),
            shape=(b, h, w, c),
        )
        out.append(np.clip(np.asarray(images)[:n], -1.0, 1.0))
    return np.concatenate(out)
