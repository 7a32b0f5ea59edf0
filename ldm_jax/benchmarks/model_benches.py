"""Our side of the peer comparison: U-Net forward and train step, guided DDIM, autoencoder.

Each function builds the preset's networks with random weights, compiles once (timed apart),
times `repeats` iterations after a warm-up and returns a `timing.record`. The PyTorch peer
(`benchmarks/peers`) runs the same work on the same shapes:
  unet_forward: eps = U-Net(z_t, t, context).
  unet_train:   z_t = q_sample(z_0, t, noise); MSE(U-Net(z_t, t, context), noise); backward;
                AdamW update (parameters and optimizer state donated).
  sample:       50-step DDIM with classifier-free guidance, the (cond, uncond) pair in one
                U-Net call on the doubled batch, the whole loop one compiled program.
  autoencoder:  decode(encode(x).mode()).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ldm_jax import diffusion
from ldm_jax.benchmarks.presets import Preset
from ldm_jax.benchmarks.timing import record, time_iterations
from ldm_jax.benchmarks.xla_measure import compile_timed, matmul_peak_flops, xla_flops, xla_threads
from ldm_jax.models import factory
from ldm_jax.models.autoencoder import DiagonalGaussian
from ldm_jax.training.step_compiler import memory_analysis

FRAMEWORK = f"jax {jax.__version__} ({jax.default_backend()})"
SCHEDULE = dict(kind="scaled_linear", num_timesteps=1000, beta_start=0.00085, beta_end=0.012)


def _memory(compiled: Any) -> dict[str, int]:
    """XLA's buffer sizes of a compiled program: argument, output, temp (activations) bytes."""
    return {k.replace("_size_in", ""): v for k, v in memory_analysis(compiled).items()}


def _record(bench, preset, batch, times, compile_s, items, item, flops, **extra):
    return record(
        bench,
        FRAMEWORK,
        preset.name,
        batch,
        "float32",
        times,
        compile_s,
        items,
        item,
        flops,
        matmul_peak_flops("float32"),
        xla_threads(),
        **extra,
    )


def unet_and_inputs(preset: Preset, batch: int, remat: str = "none", seed: int = 0):
    """(unet, params, x [B, h, w, c], t [B], context [B, L, D] or None), random weights."""
    unet = factory.build_unet(preset.unet).clone(remat_policy=remat)
    rng = np.random.default_rng(seed)
    h, w, c = preset.latent_shape
    x = jnp.asarray(rng.normal(size=(batch, h, w, c)), jnp.float32)
    t = jnp.asarray(rng.integers(0, 1000, batch), jnp.int32)
    context = None
    if preset.context_len:
        shape = (batch, preset.context_len, preset.context_dim)
        context = jnp.asarray(rng.normal(size=shape), jnp.float32)
    first = None if context is None else context[:1]
    init = lambda: nn.unbox(unet.init(jax.random.PRNGKey(seed), x[:1], t[:1], first))
    return unet, jax.jit(init)()["params"], x, t, context


def bench_unet_forward(preset: Preset, repeats: int) -> dict[str, Any]:
    """U-Net forward throughput (latents/s)."""
    unet, params, x, t, context = unet_and_inputs(preset, preset.batch)
    fn = lambda p, x, t, c: unet.apply({"params": p}, x, t, c)
    compiled, compile_s = compile_timed(jax.jit(fn), params, x, t, context)
    times = time_iterations(lambda: jax.block_until_ready(compiled(params, x, t, context)), repeats)
    flops = xla_flops(fn, params, x, t, context)
    n = sum(a.size for a in jax.tree.leaves(params))
    return _record(
        "unet_forward",
        preset,
        preset.batch,
        times,
        compile_s,
        preset.batch,
        "latent",
        flops,
        params=n,
        **_memory(compiled),
    )


def make_train_step(unet: nn.Module, tx: optax.GradientTransformation):
    """(params, opt_state, z0, noise, t, context) -> (params, opt_state, loss): eps-MSE + AdamW."""
    sched = diffusion.NoiseSchedule.create(
        SCHEDULE["kind"], SCHEDULE["num_timesteps"], SCHEDULE["beta_start"], SCHEDULE["beta_end"]
    )

    def loss_fn(params, z0, noise, t, context):
        z_t = diffusion.q_sample(sched, z0, t, noise)  # [B, h, w, c]
        eps = unet.apply({"params": params}, z_t, t, context)
        return jnp.mean(jnp.square(eps - noise))

    def step(params, opt_state, z0, noise, t, context):
        loss, grads = jax.value_and_grad(loss_fn)(params, z0, noise, t, context)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def bench_unet_train(preset: Preset, repeats: int, remat: str = "none") -> dict[str, Any]:
    """U-Net training-step throughput (latents/s) with AdamW, state donated."""
    unet, params, z0, t, context = unet_and_inputs(preset, preset.batch, remat)
    noise = jax.random.normal(jax.random.PRNGKey(1), z0.shape)
    tx = optax.adamw(1e-4, weight_decay=0.01)
    opt_state = jax.jit(tx.init)(params)
    step = make_train_step(unet, tx)
    compiled, compile_s = compile_timed(
        jax.jit(step, donate_argnums=(0, 1)), params, opt_state, z0, noise, t, context
    )
    state = [params, opt_state]

    def run():
        state[0], state[1], loss = compiled(state[0], state[1], z0, noise, t, context)
        jax.block_until_ready(loss)

    times = time_iterations(run, repeats)
    flops = xla_flops(step, state[0], state[1], z0, noise, t, context)
    return _record(
        "unet_train",
        preset,
        preset.batch,
        times,
        compile_s,
        preset.batch,
        "latent",
        flops,
        remat=remat,
        **_memory(compiled),
    )


def bench_sample(
    preset: Preset, repeats: int, steps: int = 50, guidance: float = 7.5
) -> dict[str, Any]:
    """50-step DDIM + classifier-free guidance: images/s, U-Net batch 2 x images."""
    images = max(1, preset.batch // 2)
    unet, params, x, t, context = unet_and_inputs(preset, images)
    sched = diffusion.NoiseSchedule.create(
        SCHEDULE["kind"], SCHEDULE["num_timesteps"], SCHEDULE["beta_start"], SCHEDULE["beta_end"]
    )
    uncond = None if context is None else jnp.zeros_like(context[:1])
    model_fn = lambda p: lambda x, t, c: unet.apply({"params": p}, x, t, c)

    def generate(params, x_T, context, scale):
        pair_fn = diffusion.guidance_pair_fn(model_fn(params), context, uncond)
        return diffusion.sample(
            pair_fn,
            x_T,
            sched,
            "ddim",
            steps,
            guidance_scale=scale,
            timestep_spacing="leading",
            steps_offset=1,
        )

    scale = jnp.float32(guidance)
    compiled, compile_s = compile_timed(jax.jit(generate), params, x, context, scale)
    times = time_iterations(
        lambda: jax.block_until_ready(compiled(params, x, context, scale)), repeats
    )
    pair = lambda p, x, t, c: diffusion.guidance_pair_fn(model_fn(p), c, uncond)(x, t)
    flops = xla_flops(pair, params, x, t, context)
    return _record(
        "sample",
        preset,
        2 * images,
        times,
        compile_s,
        images,
        "image",
        flops and steps * flops,
        sampler="ddim",
        steps=steps,
        images=images,
        seconds_per_image=round(float(np.median(times)) / images, 4),
        **_memory(compiled),
    )


def bench_autoencoder(preset: Preset, repeats: int) -> dict[str, Any]:
    """First-stage encode + decode throughput (images/s)."""
    ae = factory.build_first_stage(preset.first_stage)
    x = jnp.asarray(
        np.random.default_rng(0).uniform(-1, 1, (preset.ae_batch, *preset.image_shape)),
        jnp.float32,
    )
    params = jax.jit(lambda: nn.unbox(ae.init(jax.random.PRNGKey(0), x[:1])))()["params"]

    def fn(p, x):
        enc = ae.apply({"params": p}, x, method=ae.encode)
        z = enc.mean if isinstance(enc, DiagonalGaussian) else enc.quant
        return ae.apply({"params": p}, z, method=ae.decode)

    compiled, compile_s = compile_timed(jax.jit(fn), params, x)
    times = time_iterations(lambda: jax.block_until_ready(compiled(params, x)), repeats)
    return _record(
        "autoencoder",
        preset,
        preset.ae_batch,
        times,
        compile_s,
        preset.ae_batch,
        "image",
        xla_flops(fn, params, x),
        **_memory(compiled),
    )
