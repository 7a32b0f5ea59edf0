"""Stage 2: train the latent diffusion model on the frozen first stage's latents.

The latents and the condition arrays come from `trainers/latents.py`; what the denoiser receives
for each conditioning (class, adm, text, fixed context, super-resolution, inpainting, semantic,
hybrid), with condition dropout, from `trainers/conditions.py`. The regression target and loss
(`diffusion.prediction_type`, `loss_type` l2 | l1, `loss_weighting`) are read from
`config.diffusion`. One sharded, AOT-compiled step with donated state; a resumed run continues
bitwise (all randomness comes from the state's key, the loader position is checkpointed).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ldm_jax import diffusion
from ldm_jax.config import builders
from ldm_jax.config.options import train_options
from ldm_jax.models.latent_denoiser import LatentDenoiser
from ldm_jax.sampling import images as image_grid
from ldm_jax.sampling.generate import make_generate_fn, make_sampler
from ldm_jax.trainers import captions, latents
from ldm_jax.trainers.conditions import Conditions, make_conditions, sample_inputs
from ldm_jax.training import logging as log
from ldm_jax.training.checkpoint import Checkpointer
from ldm_jax.training.finite_guard import NONFINITE_METRIC, tensor_names
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
from ldm_jax.training.state import TrainState, checked_update, create_state
from ldm_jax.workdir import layout

StepFn = Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]


def checkpoint_dir(workdir: str) -> str:
    return layout.checkpoint_dir(workdir, "ldm")


def training_denoiser(config: ml_collections.ConfigDict) -> LatentDenoiser:
    """The config's denoiser with the stage's compute dtype and U-Net remat policy applied."""
    opts = train_options(config.train)
    denoiser = builders.build_denoiser(config)
    unet = denoiser.diffusion_model.clone(dtype=opts.dtype, remat_policy=opts.remat)
    return denoiser.clone(diffusion_model=unet)


def sample_latents(batch: dict[str, jax.Array], rng: jax.Array, deterministic: bool) -> jax.Array:
    """z ~ q(z|x) from the cached posterior (KL), or the cached latent itself (deterministic:
    VQ's h, the identity's pixels)."""
    if deterministic:
        return batch["mean"]
    std = jnp.exp(0.5 * batch["logvar"])
    return batch["mean"] + std * jax.random.normal(rng, std.shape)


def offset_noise(rng: jax.Array, shape: tuple[int, ...], offset: float) -> jax.Array:
    """N(0, 1) noise of `shape` [B, h, w, c], plus `offset` times one N(0, 1) draw per example
    and channel ([B, 1, 1, c]; "offset noise", which lets the model shift an image's mean
    brightness); plain noise when `offset` is 0."""
    if not offset:
        return jax.random.normal(rng, shape, jnp.float32)
    noise_rng, offset_rng = jax.random.split(rng)
    noise = jax.random.normal(noise_rng, shape, jnp.float32)
    per_channel = jax.random.normal(offset_rng, (shape[0], 1, 1, shape[-1]), jnp.float32)
    return noise + offset * per_channel


def make_loss_fn(
    config: ml_collections.ConfigDict,
    scale_factor: float,
    conditions: Conditions | None = None,
) -> Callable[..., tuple[jax.Array, dict]]:
    """(denoiser params, batch, (z_rng, step_rng)) -> (scalar loss, {}).

    The loss is the mean over the batch of the per-example diffusion loss, each example
    multiplied by `batch["weight"]` [B] when the batch has one (prior preservation's instance
    and class examples; see `trainers/finetune.py`). `diffusion.offset_noise` > 0 adds offset
    noise (`offset_noise`).
    """
    denoiser = training_denoiser(config)
    schedule = builders.build_schedule(config)
    conditions = make_conditions(config) if conditions is None else conditions
    deterministic = builders.has_deterministic_latents(config)
    d = config.diffusion
    offset = float(d.get("offset_noise", 0.0))

    def loss_fn(params, batch, rngs):
        z_rng, step_rng = rngs
        t_rng, noise_rng, drop_rng, dropout_rng = jax.random.split(step_rng, 4)
        z0 = sample_latents(batch, z_rng, deterministic) * scale_factor  # [B, h, w, c]
        t = jax.random.randint(t_rng, (z0.shape[0],), 0, schedule.num_timesteps, jnp.int32)  # [B]
        noise = offset_noise(noise_rng, z0.shape, offset)  # [B, h, w, c]
        z_t = diffusion.q_sample(schedule, z0, t, noise)  # [B, h, w, c]
        y, concat = conditions.train(batch, drop_rng)
        out = denoiser.apply(
            {"params": params},
            z_t,
            t,
            y,
            deterministic=False,
            concat=concat,
            rngs={"dropout": dropout_rng},
        )
        target = diffusion.training_target(schedule, z0, t, noise, d.prediction_type)
        loss = diffusion.weighted_mse_loss(
            out.astype(jnp.float32),
            target,
            schedule,
            t,
            d.loss_weighting,
            d.prediction_type,
            loss_type=d.get("loss_type", "l2"),
            min_snr_gamma=d.min_snr_gamma,
            original_elbo_weight=d.original_elbo_weight,
        )  # [B]
        if "weight" in batch:
            loss = loss * batch["weight"].astype(jnp.float32)
        return jnp.mean(loss), {}

    return loss_fn


def make_train_step(
    config: ml_collections.ConfigDict,
    tx: optax.GradientTransformation,
    scale_factor: float,
    conditions: Conditions | None = None,
) -> StepFn:
    """The (state, batch) -> (state, metrics) update (to be jitted with shardings).

    A batch holds the latents ("mean" [B, h, w, c] and, for a KL first stage, "logvar"; z is
    resampled from the posterior every step and scaled by `scale_factor`) and the arrays of its
    condition (`conditions.keys`; see `trainers/conditions.py`). `conditions` defaults to those
    of a class-conditional or unconditional model. The loss: `make_loss_fn`.
    """
    loss_fn = make_loss_fn(config, scale_factor, conditions)
    ema_decay = config.train.ema_decay
    opts = train_options(config.train)

    def train_step(state: TrainState, batch):
        rng, z_rng, step_rng = jax.random.split(state.rng, 3)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        rngs = (z_rng, step_rng)
        (loss, _), grads = accumulate_gradients(
            grad_fn, state.params, batch, rngs, opts.grad_accum_steps
        )
        state, report = checked_update(state, loss, grads, tx, rng, ema_decay, opts.skip_nonfinite)
        return state, {"loss": loss, NONFINITE_METRIC: report}

    return train_step


def step_keys(config: ml_collections.ConfigDict, conditions: Conditions) -> tuple[str, ...]:
    """The batch arrays the train step reads."""
    lat = ("mean",) if builders.has_deterministic_latents(config) else ("mean", "logvar")
    return lat + conditions.keys


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


def sample_grid(
    config: ml_collections.ConfigDict,
    generate: Callable[..., jax.Array],
    ae_params: Any,
    ema_params: Any,
    scale_factor: float,
    seed: int,
) -> np.ndarray:
    """One row per class, `config.sample.per_class` columns, from the EMA weights (data
    without classes, e.g. an unconditional model on emoji: `per_class` rows)."""
    s = config.sample
    rows = config.data.num_classes or s.per_class
    labels = np.repeat(np.arange(rows, dtype=np.int32), s.per_class)
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


def make_grid_fn(
    config: ml_collections.ConfigDict,
    conditions: Conditions,
    first_batch: dict[str, np.ndarray],
    ae_params: Any,
) -> Callable[[Any, float], np.ndarray]:
    """(EMA params, scale factor) -> a sample grid: one row per class for class labels and
    unconditional models (`sample_grid`); otherwise up to 8 samples conditioned on the first
    batch's conditions (captions, low-resolution images, masked images, maps)."""
    s = config.sample
    if conditions.kind in ("none", "class", "adm"):
        generate = make_generate_fn(config, s.sampler, s.steps)
        return lambda ema, sf: sample_grid(config, generate, ae_params, ema, sf, config.seed)
    num = min(8, len(first_batch["mean"]))
    cond, uncond = sample_inputs(conditions, first_batch, num)
    sample = make_sampler(config, s.sampler, s.steps)
    h, w, c = first_batch["mean"].shape[1:]

    def grid(ema: Any, scale_factor: float) -> np.ndarray:
        images = sample(
            ae_params,
            ema,
            cond,
            uncond,
            jax.random.PRNGKey(config.seed),
            jnp.float32(s.guidance_scale),
            jnp.float32(s.eta),
            jnp.float32(scale_factor),
            shape=(num, h, w, c),
        )
        return image_grid.make_grid(np.asarray(images), columns=num)

    return grid


def _scale_factor(
    config: ml_collections.ConfigDict, meta: dict[str, Any], make_loader: Callable[..., Any]
) -> float:
    if meta:
        return float(meta["scale_factor"])
    if config.diffusion.scale_by_std:
        # The whole first global batch, identical on every process.
        deterministic = builders.has_deterministic_latents(config)
        scale = latents.scale_factor_from_batch(next(make_loader()), config.seed, deterministic)
        log.info("ldm: scale_by_std -> scale_factor = %.4f", scale)
        return scale
    return float(config.diffusion.scale_factor)


def _only(batches: Iterator[dict[str, np.ndarray]], keys: tuple[str, ...]) -> Iterator[dict]:
    for batch in batches:
        yield {k: batch[k] for k in keys}


class StageInputs(NamedTuple):
    """The loader of (latent, condition) batches, the latent scale and the conditions."""

    loader: Any
    scale_factor: float
    conditions: Conditions


def prepare_inputs(
    config: ml_collections.ConfigDict, workdir: str, ae_params: Any, meta: dict[str, Any]
) -> StageInputs:
    """Encodes (or opens) the latents, restores the loader position and the scale factor
    (`meta` of a restored checkpoint, or {}), and builds the conditions."""
    make_loader = latents.latent_loader_factory(config, workdir, ae_params)
    loader = make_loader(shard_index=jax.process_index(), shard_count=jax.process_count())
    if meta:
        loader.set_state(meta["data"])
    scale_factor = _scale_factor(config, meta, make_loader)
    tokenizer = None
    if builders.condition_kind(config) == "text":
        tokenizer = captions.load_tokenizer(config, workdir)
    conditions = make_conditions(config, ae_params, scale_factor, tokenizer, workdir)
    return StageInputs(loader, scale_factor, conditions)


def train_ldm(
    config: ml_collections.ConfigDict, workdir: str, ae_params: Any, writer: MetricWriter
) -> TrainState:
    """Trains (or resumes, or extends) stage 2 up to `config.train.steps`; returns the state.

    Runs on the config's mesh; with several processes each loads its rows of every batch.
    """
    tcfg = config.train
    tx = optimizer(config)
    ckpt = Checkpointer(checkpoint_dir(workdir), tcfg.keep_checkpoints)
    sharded = init_or_restore(state_init_fn(config, tx), init_rng(config), config, ckpt)
    state, meta = sharded.state, sharded.meta
    accum = train_options(tcfg).grad_accum_steps
    check_batch_size("ldm", "train", tcfg.batch_size, sharded.mesh, sharded.rules, accum)
    if meta:
        log.info("ldm: resuming from step %d", int(state.step))
    if int(state.step) >= tcfg.steps:
        ckpt.close()
        return state
    if jax.process_count() > 1:
        ae_params = replicated_to_host(ae_params, sharded.mesh)  # Encoding runs per process.
    inputs = prepare_inputs(config, workdir, ae_params, meta)
    loader, scale_factor, conditions = inputs.loader, inputs.scale_factor, inputs.conditions
    writer.scalars(int(state.step), {"ldm/scale_factor": scale_factor})
    batches = _only(iter(loader), step_keys(config, conditions))
    first_batch = next(batches)
    step_fn = make_train_step(config, tx, scale_factor, conditions)
    train_step = compiled_step("ldm", step_fn, sharded, first_batch, tcfg.batch_size)
    grid_fn = make_grid_fn(config, conditions, first_batch, ae_params)

    def on_step(step, state):
        every, at_end = tcfg.sample_every, tcfg.get("final_samples", True)
        if (step == tcfg.steps and at_end) or (every and step % every == 0):
            ema = state.ema_params
            if jax.process_count() > 1:
                ema = replicated_to_host(ema, sharded.mesh)
            if jax.process_index() != 0:
                return
            grid = grid_fn(ema, scale_factor)
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
        nonfinite_names=tensor_names(state.params),
        skip_nonfinite=train_options(tcfg).skip_nonfinite,
    )
    ckpt.close()
    return state
