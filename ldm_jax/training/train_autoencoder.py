"""Stage 1: train the KL autoencoder on images (reconstruction + KL)."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ldm_jax.data import datasets, pipeline
from ldm_jax.losses.autoencoder_loss import kl_autoencoder_loss, psnr
from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.training import builders, image_grid
from ldm_jax.training.checkpoint import Checkpointer
from ldm_jax.training.logging import MetricWriter
from ldm_jax.training.loop import run_loop
from ldm_jax.training.state import TrainState, apply_gradients, create_state, make_optimizer


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, "checkpoints", "autoencoder")


def make_train_step(ae: AutoencoderKL, tx, kl_weight: float, l2_weight: float):
    """Builds the jitted (state, batch) -> (state, metrics) update with the state donated."""

    def loss_fn(params, images, rng):
        x_rec, posterior = ae.apply({"params": params}, images, rng)
        loss, terms = kl_autoencoder_loss(images, x_rec, posterior, kl_weight, l2_weight)
        metrics = {k: jnp.mean(v) for k, v in terms.items()}
        metrics["psnr"] = jnp.mean(psnr(images, x_rec))
        return jnp.mean(loss), metrics

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state: TrainState, batch):
        rng, step_rng = jax.random.split(state.rng)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch["image"], step_rng
        )
        return apply_gradients(state, grads, tx, rng, None), {"loss": loss, **metrics}

    return train_step


def init_state(ae: AutoencoderKL, config: ml_collections.ConfigDict, tx) -> TrainState:
    """A fresh stage-1 state (jitted init)."""
    size, ch = config.data.image_size, config.data.channels

    @jax.jit
    def init(rng):
        init_rng, state_rng = jax.random.split(rng)
        params = ae.init(init_rng, jnp.zeros((1, size, size, ch)))["params"]
        return create_state(params, tx, state_rng, use_ema=False)

    return init(jax.random.PRNGKey(config.seed))


def restore_params(workdir: str, config: ml_collections.ConfigDict):
    """Latest stage-1 parameters of a workdir (raises MissingCheckpointError if none)."""
    ae = builders.build_autoencoder(config)
    tcfg = config.autoencoder_train
    tx = make_optimizer(tcfg.learning_rate, tcfg.warmup_steps, tcfg.weight_decay, tcfg.grad_clip)
    abstract = jax.eval_shape(lambda: init_state(ae, config, tx))
    ckpt = Checkpointer(checkpoint_dir(workdir), tcfg.keep_checkpoints)
    state, _ = ckpt.restore(abstract)
    ckpt.close()
    return state.params


def _check_channels(batch: dict[str, np.ndarray], config: ml_collections.ConfigDict) -> None:
    got = batch["image"].shape[-1]
    if got != config.data.channels:
        raise ValueError(
            f"config.data.channels={config.data.channels} but dataset "
            f"{config.data.name!r} has {got}-channel images; set "
            f"--config.data.channels={got}."
        )


def train_autoencoder(config: ml_collections.ConfigDict, workdir: str, writer: MetricWriter):
    """Trains (or resumes, or extends) stage 1 up to `config.autoencoder_train.steps`.

    Returns:
      The trained autoencoder parameters.
    """
    ae = builders.build_autoencoder(config)
    tcfg = config.autoencoder_train
    tx = make_optimizer(tcfg.learning_rate, tcfg.warmup_steps, tcfg.weight_decay, tcfg.grad_clip)
    source = datasets.get_data_source(
        config.data.name, config.data.train_split, config.data.data_dir or None
    )
    loader = pipeline.make_train_loader(
        source, batch_size=tcfg.batch_size, image_size=config.data.image_size, seed=config.seed
    )
    ckpt = Checkpointer(checkpoint_dir(workdir), tcfg.keep_checkpoints)
    state = init_state(ae, config, tx)
    if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(state)
        loader.set_state(meta["data"])
        print(f"autoencoder: resuming from step {int(state.step)}")
    if int(state.step) >= tcfg.steps:
        ckpt.close()
        return state.params
    eval_images = None

    def batches():
        nonlocal eval_images
        for batch in loader:
            _check_channels(batch, config)
            if eval_images is None:
                eval_images = batch["image"][:8]
            yield batch

    recon = jax.jit(lambda p, x: ae.apply({"params": p}, x))

    def on_step(step, state):
        every = tcfg.sample_every
        if step == tcfg.steps or (every and step % every == 0):
            x_rec, _ = recon(state.params, eval_images)
            grid = image_grid.make_grid(np.concatenate([eval_images, np.asarray(x_rec)]), columns=8)
            image_grid.save_png(
                os.path.join(workdir, "samples", f"autoencoder_step_{step}.png"), grid
            )
            writer.image(step, "autoencoder/reconstructions", grid)

    state = run_loop(
        name="autoencoder",
        state=state,
        step_fn=make_train_step(ae, tx, tcfg.kl_weight, tcfg.l2_weight),
        batches=batches(),
        total_steps=tcfg.steps,
        log_every=tcfg.log_every,
        checkpoint_every=tcfg.checkpoint_every,
        checkpointer=ckpt,
        writer=writer,
        meta_fn=lambda: {"data": loader.get_state()},
        on_step=on_step,
        learning_rate_field="autoencoder_train.learning_rate",
    )
    ckpt.close()
    return state.params
