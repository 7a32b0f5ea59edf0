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

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.config import builders
from ldm_jax.config.defaults import with_defaults
from ldm_jax.config.options import mesh_config, train_options
from ldm_jax.config.validation import validate_config
from ldm_jax.parallel import sharding
from ldm_jax.sampling.generate import make_generate_fn
from ldm_jax.trainers import autoencoder as train_autoencoder
from ldm_jax.trainers import ldm as train_ldm
from ldm_jax.training.optimizer import optimizer_for
from ldm_jax.training.step_compiler import compile_train_step, memory_analysis

BENCHMARKS = ("ae_step", "ldm_step", "sample")


def _time_loop(run: Callable[[Any], Any], carry: Any, steps: int) -> tuple[Any, float]:
    """Runs `carry = run(carry)` `steps` times; returns the carry and the seconds taken."""
    start = time.perf_counter()
    for _ in range(steps):
        carry = run(carry)
    jax.block_until_ready(carry)
    return carry, time.perf_counter() - start


def _train_step_bench(name, config, init_fn, rng, step_fn, host_batch, steps) -> dict[str, Any]:
    """Compiles and times a train step exactly as the trainer runs it (mesh, shardings)."""
    mesh = sharding.make_mesh(mesh_config(config))
    rules = sharding.logical_axis_rules(mesh_config(config))
    state, shardings = sharding.create_sharded(init_fn, rng, mesh, rules)
    batch_sh = sharding.batch_sharding(mesh, rules)
    b = len(next(iter(host_batch.values())))
    batch = sharding.put_batch(host_batch, batch_sh, b)
    start = time.perf_counter()
    compiled, memory = compile_train_step(
        step_fn,
        sharding.abstract_with_shardings(state, shardings),
        shardings,
        {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sh) for k, v in batch.items()},
        batch_sh,
        mesh,
    )
    compile_s = time.perf_counter() - start
    state, _ = compiled(state, batch)  # warm-up
    _, seconds = _time_loop(lambda s: compiled(s, batch)[0], state, steps)
    return {
        "bench": name,
        "batch": b,
        "mesh": dict(mesh.shape),
        "compile_s": round(compile_s, 2),
        "steps_per_s": round(steps / seconds, 3),
        "images_per_s": round(b * steps / seconds, 1),
        **{k.replace("_size_in", ""): v for k, v in memory.items()},
    }


def bench_ae_step(config, batch_size: int, steps: int) -> dict[str, Any]:
    """Stage-1 training step (forward, backward, AdamW)."""
    t = config.autoencoder_train
    opts = train_options(t)
    ae = builders.build_autoencoder(config)
    tx = optimizer_for(t)
    size, ch = config.data.image_size, config.data.channels
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(-1, 1, (batch_size, size, size, ch)).astype(np.float32)}
    step = train_autoencoder.make_train_step(
        ae.clone(dtype=opts.dtype), tx, t.kl_weight, t.l2_weight, opts.grad_accum_steps
    )
    init = train_autoencoder.state_init_fn(ae, config, tx)
    result = _train_step_bench("ae_step", config, init, jax.random.PRNGKey(0), step, batch, steps)
    return {**result, "compute_dtype": opts.compute_dtype, "grad_accum": opts.grad_accum_steps}


def bench_ldm_step(config, batch_size: int, steps: int) -> dict[str, Any]:
    """Stage-2 training step (z resampling, U-Net forward/backward, AdamW, EMA)."""
    opts = train_options(config.train)
    tx = train_ldm.optimizer(config)
    h, w, c = builders.latent_shape(config)
    rng = np.random.default_rng(0)
    batch = {
        "mean": rng.normal(size=(batch_size, h, w, c)).astype(np.float32),
        "logvar": np.full((batch_size, h, w, c), -4.0, np.float32),
        "label": rng.integers(0, config.data.num_classes, batch_size).astype(np.int32),
    }
    step = train_ldm.make_train_step(config, tx, 1.0)
    init = train_ldm.state_init_fn(config, tx)
    result = _train_step_bench(
        "ldm_step", config, init, train_ldm.init_rng(config), step, batch, steps
    )
    return {
        **result,
        "compute_dtype": opts.compute_dtype,
        "remat": opts.remat,
        "grad_accum": opts.grad_accum_steps,
    }


def bench_sample(config, batch_size: int, steps: int, sample_steps: int) -> dict[str, Any]:
    """Guided sampling plus decoding, per image (random weights: speed only)."""
    ae = builders.build_autoencoder(config)
    size, ch = config.data.image_size, config.data.channels
    ae_params = nn.unbox(ae.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, ch))))["params"]
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
        **{k.replace("_size_in", ""): v for k, v in memory_analysis(compiled).items()},
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
