"""Stage 1: train the first stage on images.

KL autoencoder: per-example summed L1 (+ l2_weight * squared error) + kl_weight * KL, as the
reference's `LPIPSWithDiscriminator` without LPIPS and GAN. VQ autoencoder: mean L1 (+ l2_weight
* mean squared error) + codebook_weight * the quantiser's codebook/commitment loss, as the
reference's `VQLPIPSWithDiscriminator` without LPIPS and GAN. A config whose
`autoencoder_train.loss` section asks for LPIPS, the PatchGAN, a learned log-variance or the EMA
codebook trains with the paper's full loss instead (`trainers/autoencoder_gan.py`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ldm_jax.config import builders
from ldm_jax.config.model_config import has_model_section
from ldm_jax.config.options import train_options
from ldm_jax.data import pipeline
from ldm_jax.losses.autoencoder_loss import kl_autoencoder_loss, psnr
from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.models.vq_autoencoder import VQModel
from ldm_jax.sampling import images as image_grid
from ldm_jax.trainers import autoencoder_gan
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
from ldm_jax.workdir.reader import has_first_stage_params


def checkpoint_dir(workdir: str) -> str:
    return layout.checkpoint_dir(workdir, "autoencoder")


def vq_loss_fn(ae: VQModel, l2_weight: float, codebook_weight: float):
    """(params, batch, rng) -> (loss, metrics) of a VQ first stage (see the module docstring)."""

    def loss_fn(params, batch, rng):
        images = batch["image"]  # [B, H, W, C]
        x_rec, qloss, _ = ae.apply({"params": params}, images)
        diff = x_rec.astype(jnp.float32) - images
        l1, mse = jnp.mean(jnp.abs(diff)), jnp.mean(diff**2)
        loss = l1 + l2_weight * mse + codebook_weight * qloss
        metrics = {"l1": l1, "mse": mse, "codebook": qloss}
        metrics["psnr"] = jnp.mean(psnr(images, x_rec.astype(jnp.float32)))
        return loss, metrics

    return loss_fn


def make_train_step(
    ae: AutoencoderKL | VQModel,
    tx: optax.GradientTransformation,
    kl_weight: float,
    l2_weight: float,
    accum: int = 1,
    codebook_weight: float = 1.0,
    skip_nonfinite: bool = False,
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """The (state, batch) -> (state, metrics) update (to be jitted with shardings)."""

    def loss_fn(params, batch, rng):
        images = batch["image"]  # [B, H, W, C]
        x_rec, posterior = ae.apply({"params": params}, images, rng)
        loss, terms = kl_autoencoder_loss(
            images, x_rec.astype(jnp.float32), posterior, kl_weight, l2_weight
        )
        metrics = {k: jnp.mean(v) for k, v in terms.items()}
        metrics["psnr"] = jnp.mean(psnr(images, x_rec.astype(jnp.float32)))
        return jnp.mean(loss), metrics

    if isinstance(ae, VQModel):
        loss_fn = vq_loss_fn(ae, l2_weight, codebook_weight)

    def train_step(state: TrainState, batch):
        rng, step_rng = jax.random.split(state.rng)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, metrics), grads = accumulate_gradients(
            grad_fn, state.params, {"image": batch["image"]}, step_rng, accum
        )
        state, report = checked_update(state, loss, grads, tx, rng, None, skip_nonfinite)
        return state, {"loss": loss, **metrics, NONFINITE_METRIC: report}

    return train_step


def state_init_fn(
    ae: AutoencoderKL | VQModel, config: ml_collections.ConfigDict, tx: optax.GradientTransformation
) -> Callable[[jax.Array], TrainState]:
    """rng -> a fresh stage-1 state, its kernels boxed with logical axis names."""
    size, ch = config.data.image_size, config.data.channels

    def init(rng):
        init_rng, state_rng = jax.random.split(rng)
        params = ae.init(init_rng, jnp.zeros((1, size, size, ch)))["params"]
        return create_state(params, tx, state_rng, use_ema=False)

    return init


def init_state(
    ae: AutoencoderKL | VQModel, config: ml_collections.ConfigDict, tx: optax.GradientTransformation
) -> TrainState:
    """A fresh stage-1 state on the default device (benchmarks and tests; training shards it)."""
    init = state_init_fn(ae, config, tx)
    return jax.jit(lambda r: nn.unbox(init(r)))(jax.random.PRNGKey(config.seed))


def _stage(
    ae: AutoencoderKL | VQModel, config: ml_collections.ConfigDict
) -> tuple[Callable[[jax.Array], Any], Callable[[nn.Module], Callable]]:
    """(state init fn, module -> train step) for the config's loss: the plain one-optimizer
    step, or the paper's loss with LPIPS / PatchGAN / EMA codebook (`autoencoder_gan`)."""
    tcfg = config.autoencoder_train
    if autoencoder_gan.uses_paper_loss(config):
        loss_cfg = autoencoder_gan.loss_config(tcfg)
        ae_tx, disc_tx = autoencoder_gan.optimizers(tcfg, loss_cfg)
        init = autoencoder_gan.state_init_fn(ae, config, loss_cfg, ae_tx, disc_tx)
        return init, lambda m: autoencoder_gan.make_train_step(m, config, loss_cfg, ae_tx, disc_tx)
    tx = optimizer_for(tcfg)
    return state_init_fn(ae, config, tx), lambda m: make_train_step(
        m,
        tx,
        tcfg.kl_weight,
        tcfg.l2_weight,
        train_options(tcfg).grad_accum_steps,
        tcfg.get("codebook_weight", 1.0),
        train_options(tcfg).skip_nonfinite,
    )


def _gradient_names(state: Any, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Names of the tensors the train step's `nonfinite` report indexes."""
    if autoencoder_gan.uses_paper_loss(config):
        ae = builders.build_autoencoder(config)
        loss_cfg = autoencoder_gan.loss_config(config.autoencoder_train)
        return autoencoder_gan.gradient_names(ae, loss_cfg, state)
    return tensor_names(state.params)


def restore_params(workdir: str, config: ml_collections.ConfigDict) -> Any:
    """Latest stage-1 parameters of a workdir (raises MissingCheckpointError if none)."""
    ae = builders.build_autoencoder(config)
    ckpt = Checkpointer(checkpoint_dir(workdir), config.autoencoder_train.keep_checkpoints)
    if ckpt.latest_step() is None:
        ckpt.restore(None)  # Raises MissingCheckpointError naming the folder.
    rng = jax.random.PRNGKey(config.seed)
    sharded = init_or_restore(_stage(ae, config)[0], rng, config, ckpt)
    ckpt.close()
    return sharded.state.params


def _check_channels(batch: dict[str, np.ndarray], config: ml_collections.ConfigDict) -> None:
    got = batch["image"].shape[-1]
    if got != config.data.channels:
        raise ValueError(
            f"config.data.channels={config.data.channels} but dataset "
            f"{config.data.name!r} has {got}-channel images; set "
            f"--config.data.channels={got}."
        )


def _image_loader(config: ml_collections.ConfigDict) -> Any:
    """The training images; experiment configs also convert channels and crop as configured."""
    d = config.data
    extra = {}
    if has_model_section(config):
        extra = dict(channels=d.channels, crop=d.get("crop", "center"))
    return pipeline.make_train_loader(
        builders.build_data_source(config),
        batch_size=config.autoencoder_train.batch_size,
        image_size=d.image_size,
        seed=config.seed,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        **extra,
    )


def _reconstruction_hook(
    config: ml_collections.ConfigDict,
    ae: AutoencoderKL | VQModel,
    eval_images: np.ndarray,
    mesh: Any,
    workdir: str,
    writer: MetricWriter,
) -> Callable[[int, TrainState], None]:
    """on_step: every `sample_every` steps and at the end, a grid of the first batch's first
    images over their reconstructions."""
    tcfg = config.autoencoder_train
    recon = jax.jit(lambda p, x: ae.apply({"params": p}, x)[0])  # KL and VQ: x_rec first

    def on_step(step: int, state: TrainState) -> None:
        every = tcfg.sample_every
        if step == tcfg.steps or (every and step % every == 0):
            params = state.params
            if jax.process_count() > 1:
                params = replicated_to_host(params, mesh)
            if jax.process_index() != 0:
                return
            x_rec = recon(params, eval_images)
            grid = image_grid.make_grid(np.concatenate([eval_images, np.asarray(x_rec)]), columns=8)
            image_grid.save_png(layout.sample_path(workdir, step, prefix="autoencoder_"), grid)
            writer.image(step, "autoencoder/reconstructions", grid)

    return on_step


def train_autoencoder(config: ml_collections.ConfigDict, workdir: str, writer: MetricWriter) -> Any:
    """Trains (or resumes, or extends) stage 1 up to `config.autoencoder_train.steps`.

    Runs on the config's mesh; with several processes each loads its rows of every batch.

    Returns:
      The trained autoencoder parameters.
    """
    if not has_first_stage_params(config):  # The identity first stage: nothing to train.
        log.info("autoencoder: the identity first stage has no parameters; nothing to train")
        return {}
    tcfg = config.autoencoder_train
    opts = train_options(tcfg)
    ae = builders.build_autoencoder(config)
    init, make_step = _stage(ae, config)
    ckpt = Checkpointer(checkpoint_dir(workdir), tcfg.keep_checkpoints)
    rng = jax.random.PRNGKey(config.seed)
    sharded = init_or_restore(init, rng, config, ckpt)
    accum = opts.grad_accum_steps
    check_batch_size(
        "autoencoder", "autoencoder_train", tcfg.batch_size, sharded.mesh, sharded.rules, accum
    )
    state = sharded.state
    loader = _image_loader(config)
    if sharded.meta:
        loader.set_state(sharded.meta["data"])
        log.info("autoencoder: resuming from step %d", int(state.step))
    if int(state.step) >= tcfg.steps:
        ckpt.close()
        return state.params
    batches = iter(loader)
    first = next(batches)
    _check_channels(first, config)
    train_step = compiled_step(
        "autoencoder",
        make_step(ae.clone(dtype=opts.dtype)),
        sharded,
        {"image": first["image"]},
        tcfg.batch_size,
    )
    on_step = _reconstruction_hook(config, ae, first["image"][:8], sharded.mesh, workdir, writer)

    state = run_loop(
        name="autoencoder",
        state=state,
        step_fn=lambda s, b: train_step(s, {"image": b["image"]}),
        batches=itertools.chain([first], batches),
        total_steps=tcfg.steps,
        log_every=tcfg.log_every,
        checkpoint_every=tcfg.checkpoint_every,
        checkpointer=ckpt,
        writer=writer,
        meta_fn=lambda: {"data": loader.get_state()},
        on_step=on_step,
        learning_rate_field="autoencoder_train.learning_rate",
        nonfinite_names=_gradient_names(state, config),
        skip_nonfinite=opts.skip_nonfinite,
    )
    ckpt.close()
    return state.params
