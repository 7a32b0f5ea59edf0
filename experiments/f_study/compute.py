"""Training and sampling cost of an LDM config: XLA FLOPs per train step, measured images/s.

FLOPs come from XLA's cost analysis of the compiled stage-2 train step (U-Net forward and
backward, Adam, EMA; attention counted as einsum: `ldm_jax.benchmarks.xla_measure.xla_flops`) on
random latents of the config's shape, as `python -m ldm_jax.bench --what ldm_step` times it.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ldm_jax.benchmarks.train_steps import bench_ldm_step
from ldm_jax.benchmarks.xla_measure import xla_flops
from ldm_jax.config import builders
from ldm_jax.config.defaults import with_defaults
from ldm_jax.trainers import ldm as train_ldm


def _batch(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, np.ndarray]:
    h, w, c = builders.latent_shape(config)
    rng = np.random.default_rng(0)
    batch = {"mean": rng.normal(size=(batch_size, h, w, c)).astype(np.float32)}  # [B, h, w, c]
    if not builders.has_deterministic_latents(config):
        batch["logvar"] = np.full((batch_size, h, w, c), -4.0, np.float32)
    if config.data.num_classes:
        batch["label"] = rng.integers(0, config.data.num_classes, batch_size).astype(np.int32)
    return batch


def train_step_flops(config: ml_collections.ConfigDict, batch_size: int) -> float:
    """XLA's FLOP count of one stage-2 train step at `batch_size`."""
    config = with_defaults(config)
    tx = train_ldm.optimizer(config)
    state = train_ldm.init_state(config, tx)
    step = train_ldm.make_train_step(config, tx, 1.0)
    flops = xla_flops(step, state, _batch(config, batch_size))
    if flops is None:
        raise RuntimeError("XLA's cost analysis reported no FLOPs for the train step.")
    return flops


def train_images_per_s(config: ml_collections.ConfigDict, batch_size: int, steps: int) -> dict:
    """The compiled train step timed as the trainer runs it (`bench_ldm_step`)."""
    return bench_ldm_step(with_defaults(config), batch_size, steps)


def sample_images_per_s(
    config: ml_collections.ConfigDict,
    ae_params: Any,
    ldm_params: Any,
    batch_size: int,
    sample_steps: int,
    repeats: int = 2,
) -> dict:
    """Guided DDIM sampling plus decoding of `batch_size` images, best of `repeats` timings."""
    from ldm_jax.sampling.generate import make_generate_fn

    generate = make_generate_fn(config, config.sample.sampler, sample_steps)
    n = max(config.data.num_classes, 1)
    args = (
        ae_params,
        ldm_params,
        jnp.arange(batch_size, dtype=jnp.int32) % n,
        jax.random.PRNGKey(0),
        jnp.float32(config.sample.guidance_scale),
        jnp.float32(config.sample.eta),
        jnp.float32(1.0),
    )
    jax.block_until_ready(generate(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(generate(*args))
        times.append(time.perf_counter() - start)
    return {
        "batch": batch_size,
        "sample_steps": sample_steps,
        "guidance_scale": float(config.sample.guidance_scale),
        "images_per_s": round(batch_size / min(times), 2),
    }
