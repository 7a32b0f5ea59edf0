"""Benchmark: in-memory encoding per (re)start vs the on-disk latent cache, and LDM steps/s.

    from ldm_jax.training import latent_cache_bench
    print(latent_cache_bench.bench_latent_cache(config, ae_params, "/tmp/latents"))

The timings do not depend on the first-stage weights' values, so freshly initialised ones
(`init_autoencoder_params`) give the same figures as trained ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from ldm_jax.data import latent_cache, latent_store
from ldm_jax.training import builders, latent_cache_writer, train_autoencoder, train_ldm
from ldm_jax.training.state import make_optimizer


def init_autoencoder_params(config: ml_collections.ConfigDict) -> Any:
    """Freshly initialised first-stage parameters for `config` (for timing only)."""
    ae = builders.build_autoencoder(config)
    t = config.autoencoder_train
    tx = make_optimizer(t.learning_rate, t.warmup_steps, t.weight_decay, t.grad_clip)
    return train_autoencoder.init_state(ae, config, tx).params


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _batches_per_s(loader: Iterator[dict[str, np.ndarray]], n: int) -> float:
    next(loader)
    _, seconds = _timed(lambda: [next(loader) for _ in range(n)])
    return n / seconds


def _ldm_step(config: ml_collections.ConfigDict, tx) -> Callable[[Any, Any], Any]:
    """The jitted (state, batch) -> (state, metrics) LDM update, scale factor 1."""
    return jax.jit(train_ldm.make_train_step(config, tx, 1.0), donate_argnums=0)


def bench_latent_cache(
    config: ml_collections.ConfigDict,
    ae_params: Any,
    directory: str,
    *,
    rounds: int = 3,
    steps_per_round: int = 10,
    loader_batches: int = 200,
) -> dict[str, float]:
    """Times both latent sources for `config` (run on an otherwise idle machine).

    Args:
      config: a validated run config (its data, autoencoder, unet and train sections are used).
      ae_params: first-stage parameters.
      directory: where to write the cache (replaced if present).
      rounds: LDM step timings alternate between the two sources this many times (medians).
      steps_per_round: LDM steps timed per source and round.
      loader_batches: batches read to time each loader alone.

    Returns:
      Seconds for: `memory_restart_s` (read + preprocess + encode the split, paid at every
      (re)start today), `cache_write_s` (once), `cache_restart_s` (open the cache, check its
      fingerprint, first batch); loader-only batches/s and LDM steps/s for each source.
    """
    tcfg = config.train
    arrays, memory_s = _timed(lambda: train_ldm.encode_train_set(config, ae_params))
    _, write_s = _timed(
        lambda: latent_cache_writer.write_latent_cache(config, ae_params, directory, overwrite=True)
    )

    def open_and_first_batch():
        store = latent_cache_writer.open_latent_cache(directory, config, ae_params)
        loader = latent_store.make_store_loader(store, batch_size=tcfg.batch_size, seed=config.seed)
        next(loader)
        return store

    store, restart_s = _timed(open_and_first_batch)
    memory = latent_cache.make_latent_loader(arrays, batch_size=tcfg.batch_size, seed=config.seed)
    disk = latent_store.make_store_loader(store, batch_size=tcfg.batch_size, seed=config.seed)
    disk_bg = latent_store.make_store_loader(
        store, batch_size=tcfg.batch_size, seed=config.seed, num_threads=1
    )
    result = {
        "num_examples": float(store.num_examples),
        "memory_restart_s": memory_s,
        "cache_write_s": write_s,
        "cache_restart_s": restart_s,
        "memory_loader_batches_per_s": _batches_per_s(memory, loader_batches),
        "cache_loader_batches_per_s": _batches_per_s(disk, loader_batches),
    }

    tx = train_ldm.optimizer(config)
    step_fn = _ldm_step(config, tx)
    state = train_ldm.init_state(config, tx)
    state, _ = step_fn(state, next(memory))  # compile
    jax.block_until_ready(state)
    sources = {"memory": memory, "cache": disk, "cache_thread": disk_bg}
    times: dict[str, list[float]] = {name: [] for name in sources}
    for _ in range(rounds):
        for name, loader in sources.items():
            start = time.perf_counter()
            for _ in range(steps_per_round):
                state, metrics = step_fn(state, next(loader))
            jax.block_until_ready(metrics)
            times[name].append(steps_per_round / (time.perf_counter() - start))
    for name, values in times.items():
        result[f"{name}_ldm_steps_per_s"] = float(np.median(values))
    return result
