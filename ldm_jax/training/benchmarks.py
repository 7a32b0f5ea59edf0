"""Benchmarks of the compiled programs: train steps of both stages and guided sampling.

Inputs are random arrays of the configured shapes, so the figures measure the compiled programs,
not the data pipeline. Each result: the benchmark, batch, compile seconds, steps/s, images/s and
the XLA memory analysis (argument/output/temp bytes) of the compiled program.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.training import builders, train_autoencoder, train_ldm
from ldm_jax.training.config_defaults import with_defaults
from ldm_jax.training.config_validation import validate_config
from ldm_jax.training.generation import make_generate_fn
from ldm_jax.training.state import make_optimizer

BENCHMARKS = ("ae_step", "ldm_step", "sample")


def _memory(compiled: Any) -> dict[str, int]:
    analysis = compiled.memory_analysis()
    if analysis is None:
        return {}
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")
    return {f.replace("_size_in", ""): int(getattr(analysis, f)) for f in fields}


def _time_loop(run: Callable[[Any], Any], carry: Any, steps: int) -> tuple[Any, float]:
    """Runs `carry = run(carry)` `steps` times; returns the carry and the seconds taken."""
    start = time.perf_counter()
    for _ in range(steps):
        carry = run(carry)
    jax.block_until_ready(carry)
    return carry, time.perf_counter() - start


def _train_step_bench(name, step_fn, state, batch, steps, extra=()) -> dict[str, Any]:
    start = time.perf_counter()
    compiled = step_fn.lower(state, batch, *extra).compile()
    compile_s = time.perf_counter() - start
    state, _ = compiled(state, batch, *extra)  # warm-up
    _, seconds = _time_loop(lambda s: compiled(s, batch, *extra)[0], state, steps)
    b = len(next(iter(batch.values())))
    return {
        "bench": name,
        "batch": b,
        "compile_s": round(compile_s, 2),
        "steps_per_s": round(steps / seconds, 3),
        "images_per_s": round(b * steps / seconds, 1),
        **_memory(compiled),
    }


def bench_ae_step(config, batch_size: int, steps: int) -> dict[str, Any]:
    """Stage-1 training step (forward, backward, AdamW)."""
    t = config.autoencoder_train
    ae = builders.build_autoencoder(config)
    tx = make_optimizer(t.learning_rate, t.warmup_steps, t.weight_decay, t.grad_clip)
    state = train_autoencoder.init_state(ae, config, tx)
    size, ch = config.data.image_size, config.data.channels
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.uniform(-1, 1, (batch_size, size, size, ch)), jnp.float32)}
    step = train_autoencoder.make_train_step(ae, tx, t.kl_weight, t.l2_weight)
    return _train_step_bench("ae_step", step, state, batch, steps)


def bench_ldm_step(config, batch_size: int, steps: int) -> dict[str, Any]:
    """Stage-2 training step (z resampling, U-Net forward/backward, AdamW, EMA)."""
    tx = train_ldm.optimizer(config)
    state = train_ldm.init_state(config, tx)
    h, w, c = builders.latent_shape(config)
    rng = np.random.default_rng(0)
    batch = {
        "mean": jnp.asarray(rng.normal(size=(batch_size, h, w, c)), jnp.float32),
        "logvar": jnp.full((batch_size, h, w, c), -4.0, jnp.float32),
        "label": jnp.asarray(rng.integers(0, config.data.num_classes, batch_size), jnp.int32),
    }
    step = train_ldm.make_train_step(config, tx)
    return _train_step_bench("ldm_step", step, state, batch, steps, (jnp.float32(1.0),))


def bench_sample(config, batch_size: int, steps: int, sample_steps: int) -> dict[str, Any]:
    """Guided sampling plus decoding, per image (random weights: speed only)."""
    ae = builders.build_autoencoder(config)
    size, ch = config.data.image_size, config.data.channels
    ae_params = ae.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, ch)))["params"]
    ldm_params = train_ldm.init_state(config, train_ldm.optimizer(config)).ema_params
    generate = make_generate_fn(config, config.sample.sampler, sample_steps)
    labels = jnp.arange(batch_size, dtype=jnp.int32) % config.data.num_classes
    args = (
        ae_params,
        ldm_params,
        labels,
        jax.random.PRNGKey(0),
        jnp.float32(config.sample.guidance_scale),
        jnp.float32(config.sample.eta),
        jnp.float32(1.0),
    )
    start = time.perf_counter()
    compiled = generate.lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    _, seconds = _time_loop(lambda _: compiled(*args), None, steps)
    return {
        "bench": "sample",
        "sampler": config.sample.sampler,
        "sample_steps": sample_steps,
        "batch": batch_size,
        "compile_s": round(compile_s, 2),
        "seconds_per_image": round(seconds / (steps * batch_size), 4),
        **_memory(compiled),
    }


def run(config, what: list[str], batch: int, steps: int, sample_steps: int) -> list[dict]:
    """Runs the named benchmarks; returns one dict per benchmark (also printed as JSON)."""
    config = with_defaults(config)
    validate_config(config)
    unknown = sorted(set(what) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"--what: unknown benchmark(s) {unknown}; choose from {BENCHMARKS}.")
    device = {"device": jax.devices()[0].device_kind, "num_devices": jax.device_count()}
    results = []
    for name in what:
        if name == "ae_step":
            r = bench_ae_step(config, batch or config.autoencoder_train.batch_size, steps)
        elif name == "ldm_step":
            r = bench_ldm_step(config, batch or config.train.batch_size, steps)
        else:
            r = bench_sample(config, batch or 16, max(1, steps // 10), sample_steps)
        results.append({**r, **device})
        print(json.dumps(results[-1]), flush=True)
    return results
