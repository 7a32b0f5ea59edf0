"""Stage 2: train the latent diffusion model on the frozen first stage's latents."""

from __future__ import annotations

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from ldm_jax import diffusion
from ldm_jax.config import builders
from ldm_jax.config.options import train_options
from ldm_jax.data import datasets, pipeline
from ldm_jax.data import latents_in_memory as latent_cache
from ldm_jax.data import latents_on_disk as latent_store
from ldm_jax.models.conditioning import drop_labels
from ldm_jax.sampling import images as image_grid
from ldm_jax.sampling.generate import make_generate_fn
from ldm_jax.training import logging as log
from ldm_jax.training.checkpoint import Checkpointer
from ldm_jax.training.gradients import accumulate_gradients
from ldm_jax.training.logging import MetricWriter
from ldm_jax.training.loop import run_loop
from ldm_jax.training.optimizer import optimizer_for
from ldm_jax.training.sharded_stage import (
    check_batch_size,
    compiled_step,
    init_or_restore,
    replicated_to_host,
)
from ldm_jax.training.state import TrainState, apply_gradients, create_state
from ldm_jax.workdir import latent_cache as latent_cache_writer
from ldm_jax.workdir import layout


def checkpoint_dir(workdir: str) -> str:
    return layout.checkpoint_dir(workdir, "ldm")


def training_denoiser(config: ml_collections.ConfigDict):
    """The config's denoiser with the stage's compute dtype and U-Net remat policy applied."""
    opts = train_options(config.train)
    denoiser = builders.build_denoiser(config)
    unet = denoiser.diffusion_model.clone(dtype=opts.dtype, remat_policy=opts.remat)
    return denoiser.clone(diffusion_model=unet)


def make_train_step(config: ml_collections.ConfigDict, tx, scale_factor: float):
    """The (state, batch) -> (state, metrics) update (to be jitted with shardings).

    A batch holds the posterior "mean" and "logvar" [B, h, w, c] and "label" [B]; z is
    resampled from the posterior every step and scaled by `scale_factor`.
    """
    denoiser = training_denoiser(config)
    schedule = builders.build_schedule(config)
    drop_prob = config.conditioning.drop_prob
    null_class = config.data.num_classes
    ema_decay = config.train.ema_decay
    accum = train_options(config.train).grad_accum_steps
    d = config.diffusion

    def loss_fn(params, batch, rngs):
        z_rng, step_rng = rngs
        t_rng, noise_rng, drop_rng, dropout_rng = jax.random.split(step_rng, 4)
        std = jnp.exp(0.5 * batch["logvar"])
        z0 = (batch["mean"] + std * jax.random.normal(z_rng, std.shape)) * scale_factor
        t = jax.random.randint(t_rng, (z0.shape[0],), 0, schedule.num_timesteps, jnp.int32)  # [B]
        noise = jax.random.normal(noise_rng, z0.shape, jnp.float32)
        z_t = diffusion.q_sample(schedule, z0, t, noise)  # [B, h, w, c]
        labels = None
        if denoiser.cond_stage_model is not None:
            labels = drop_labels(drop_rng, batch["label"], drop_prob, null_class)
        out = denoiser.apply(
            {"params": params}, z_t, t, labels, deterministic=False, rngs={"dropout": dropout_rng}
        )
        target = diffusion.training_target(schedule, z0, t, noise, d.prediction_type)
        loss = diffusion.weighted_mse_loss(
            out.astype(jnp.float32),
            target,
            schedule,
            t,
            d.loss_weighting,
            d.prediction_type,
            min_snr_gamma=d.min_snr_gamma,
            original_elbo_weight=d.original_elbo_weight,
        )  # [B]
        return jnp.mean(loss), {}

    def train_step(state: TrainState, batch):
        rng, z_rng, step_rng = jax.random.split(state.rng, 3)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        rngs = (z_rng, step_rng)
        (loss, _), grads = accumulate_gradients(grad_fn, state.params, batch, rngs, accum)
        return apply_gradients(state, grads, tx, rng, ema_decay), {"loss": loss}

    return train_step


def state_init_fn(config: ml_collections.ConfigDict, tx):
    """rng -> a fresh stage-2 state with EMA, its kernels boxed with logical axis names."""
    denoiser = builders.build_denoiser(config)
    inputs = builders.denoiser_example_inputs(config)

    def init(rng):
        init_rng, state_rng = jax.random.split(rng)
        params = denoiser.init(init_rng, *inputs)["params"]
        return create_state(params, tx, state_rng, use_ema=True)

    return init


def init_state(config: ml_collections.ConfigDict, tx) -> TrainState:
    """A fresh stage-2 state on the default device (benchmarks and tests; training shards it)."""
    init = state_init_fn(config, tx)
    return jax.jit(lambda r: nn.unbox(init(r)))(init_rng(config))


def init_rng(config: ml_collections.ConfigDict) -> jax.Array:
    return jax.random.PRNGKey(config.seed + 1)


def optimizer(config: ml_collections.ConfigDict):
    """The stage-2 optimizer from `config.train`."""
    return optimizer_for(config.train)


def restore(workdir: str, config: ml_collections.ConfigDict) -> tuple[TrainState, dict]:
    """Latest stage-2 state and metadata (with `scale_factor`) of a workdir, on the config's
    mesh."""
    ckpt = Checkpointer(checkpoint_dir(workdir), config.train.keep_checkpoints)
    if ckpt.latest_step() is None:
        ckpt.restore(None)  # Raises MissingCheckpointError naming the folder.
    sharded = init_or_restore(
        state_init_fn(config, optimizer(config)), init_rng(config), config, ckpt
    )
    ckpt.close()
    return sharded.state, sharded.meta


def encode_train_set(config: ml_collections.ConfigDict, ae_params) -> dict[str, np.ndarray]:
    """Encodes the training split once: posterior mean/log-variance and labels, in memory."""
    ae = builders.build_autoencoder(config)
    source = datasets.get_data_source(
        config.data.name, config.data.train_split, config.data.data_dir or None
    )
    images, labels = pipeline.load_split_arrays(source, config.data.image_size)
    encode = jax.jit(
        lambda x: (lambda q: (q.mean, q.logvar))(
            ae.apply({"params": ae_params}, x, method=ae.encode)
        )
    )
    mean, logvar = latent_cache.encode_arrays(encode, images)
    if labels is None:
        labels = np.zeros((len(images),), np.int32)
    return {"mean": mean, "logvar": logvar, "label": labels}


def latent_loader_factory(config: ml_collections.ConfigDict, workdir: str, ae_params):
    """(shard_index=0, shard_count=1) -> a resumable loader of latent batches.

    `config.train.latent_cache`: "memory" encodes the training split on every (re)start;
    "disk" reads `<workdir>/latents` (`python -m ldm_jax.cache_latents`), writing it first when
    missing (process 0 writes, the others wait and open it).
    """
    tcfg = config.train
    if train_options(tcfg).latent_cache == "disk":
        directory = layout.latent_cache_dir(workdir)
        failure = None
        if jax.process_index() == 0:
            log.info("ldm: latent cache %s", directory)
            try:
                store = latent_cache_writer.ensure_latent_cache(workdir, config, ae_params)
            except Exception as e:  # Re-raised below, once every process knows.
                failure = e
        if jax.process_count() > 1:
            ok = multihost_utils.broadcast_one_to_all(np.int32(failure is None))
            if not int(ok) and jax.process_index() != 0:
                raise RuntimeError(f"ldm: process 0 could not write the latent cache {directory}.")
        if failure is not None:
            raise failure
        if jax.process_index() != 0:
            store = latent_cache_writer.open_latent_cache(directory, config, ae_params)
        return functools.partial(
            latent_store.make_store_loader, store, batch_size=tcfg.batch_size, seed=config.seed
        )
    log.info("ldm: encoding the training set with the first stage ...")
    arrays = encode_train_set(config, ae_params)
    return functools.partial(
        latent_cache.make_latent_loader, arrays, batch_size=tcfg.batch_size, seed=config.seed
    )


def scale_factor_from_batch(batch: dict[str, np.ndarray], seed: int) -> float:
    """`scale_by_std`: 1 / std of z sampled from the first batch's posteriors."""
    rng = np.random.default_rng(seed)
    z = batch["mean"] + np.exp(0.5 * batch["logvar"]) * rng.standard_normal(batch["mean"].shape)
    return float(1.0 / np.std(z))


def sample_grid(
    config: ml_collections.ConfigDict,
    generate,
    ae_params,
    ema_params,
    scale_factor: float,
    seed: int,
) -> np.ndarray:
    """One row per class, `config.sample.per_class` columns, from the EMA weights."""
    s = config.sample
    labels = np.repeat(np.arange(config.data.num_classes, dtype=np.int32), s.per_class)
    images = generate(
        ae_params,
        ema_params,
        labels,
        jax.random.PRNGKey(seed),
        jnp.float32(s.guidance_scale),
        jnp.float32(s.eta),
        jnp.float32(scale_factor),
    )
    return image_grid.make_grid(np.asarray(images), columns=s.per_class)


def train_ldm(config: ml_collections.ConfigDict, workdir: str, ae_params, writer: MetricWriter):
    """Trains (or resumes, or extends) stage 2 up to `config.train.steps`; returns the state.

    Runs on the config's mesh; with several processes each loads its rows of every batch.
    """
    tcfg = config.train
    tx = optimizer(config)
    ckpt = Checkpointer(checkpoint_dir(workdir), tcfg.keep_checkpoints)
    sharded = init_or_restore(state_init_fn(config, tx), init_rng(config), config, ckpt)
    state, meta = sharded.state, sharded.meta
    check_batch_size(
        "ldm",
        "train",
        tcfg.batch_size,
        sharded.mesh,
        sharded.rules,
        train_options(tcfg).grad_accum_steps,
    )
    if meta:
        log.info("ldm: resuming from step %d", int(state.step))
    if int(state.step) >= tcfg.steps:
        ckpt.close()
        return state
    if jax.process_count() > 1:
        ae_params = replicated_to_host(ae_params, sharded.mesh)  # Encoding runs per process.
    make_loader = latent_loader_factory(config, workdir, ae_params)
    loader = make_loader(shard_index=jax.process_index(), shard_count=jax.process_count())
    if meta:
        loader.set_state(meta["data"])
        scale_factor = float(meta["scale_factor"])
    elif config.diffusion.scale_by_std:
        # The whole first global batch, identical on every process.
        scale_factor = scale_factor_from_batch(next(make_loader()), config.seed)
        log.info("ldm: scale_by_std -> scale_factor = %.4f", scale_factor)
    else:
        scale_factor = float(config.diffusion.scale_factor)
    writer.scalars(int(state.step), {"ldm/scale_factor": scale_factor})
    batches = iter(loader)
    first_batch = next(batches)
    train_step = compiled_step(
        "ldm",
        make_train_step(config, tx, scale_factor),
        sharded,
        first_batch,
        tcfg.batch_size,
    )
    generate = make_generate_fn(config, config.sample.sampler, config.sample.steps)

    def on_step(step, state):
        every = tcfg.sample_every
        if step == tcfg.steps or (every and step % every == 0):
            ema = state.ema_params
            if jax.process_count() > 1:
                ema = replicated_to_host(ema, sharded.mesh)
            if jax.process_index() != 0:
                return
            grid = sample_grid(config, generate, ae_params, ema, scale_factor, config.seed)
            image_grid.save_png(layout.sample_path(workdir, step), grid)
            writer.image(step, "ldm/samples", grid)

    state = run_loop(
        name="ldm",
        state=state,
        step_fn=train_step,
        batches=itertools.chain([first_batch], batches),
        total_steps=tcfg.steps,
        log_every=tcfg.log_every,
        checkpoint_every=tcfg.checkpoint_every,
        checkpointer=ckpt,
        writer=writer,
        meta_fn=lambda: {"data": loader.get_state(), "scale_factor": scale_factor},
        on_step=on_step,
        learning_rate_field="train.learning_rate",
    )
    ckpt.close()
    return state
