"""Fine-tuning a text-to-image workdir (Stable Diffusion imported with `python -m ldm_jax.convert`,
or any workdir whose denoiser cross-attends to a frozen text encoder it holds): LoRA or full.

  python -m ldm_jax.train --config configs/finetune/sd_lora.py --workdir runs/ft \
      --config.finetune.base_workdir=runs/sd

`config.stage == "finetune"` with a `finetune` section (`configs/finetune/*.py`):
  base_workdir   the workdir to start from; its config.json gives `model`, `diffusion` (the
                 fine-tune config's `diffusion` entries, e.g. loss_weighting="min_snr" or
                 offset_noise, override it) and `sample` (likewise), and `data.image_size`
                 (0 in the fine-tune config: the base's; another value must equal it).
  method         "lora": the frozen base denoiser plus a LoRA tree (`models/lora.py`) on the
                 U-Net's attention projections (`lora.targets`, `rank`, `alpha`); only the LoRA
                 tree is in the train state (optimizer, EMA, checkpoints). The base enters the
                 compiled step as an argument, sharded like the model's parameters, and the step
                 differentiates `merge_lora(base, lora)` w.r.t. the LoRA tree only.
                 "full": stage-2 training of every denoiser parameter from the base's EMA
                 weights (the `train` options as for `stage=ldm`: bf16, remat, accumulation,
                 FSDP through `mesh`, EMA).
  prior_preservation  DreamBooth's prior loss: before training, the base model samples
                 `num_class_images` images of `class_prompt` (the base workdir's sampler
                 settings, seed `config.seed`); their latents join the training set with the
                 class prompt as caption. Each example's loss is weighted (`batch["weight"]`):
                 1 for the instance examples, `weight * N_instance / N_class` for the class
                 examples, so the expected loss is proportional to
                 E[instance loss] + weight * E[class loss] whatever the number of class images.

The fine-tune workdir is self-contained: the base's `text_encoder/`, `tokenizer/` and first
stage (`checkpoints/autoencoder`) are copied into it; `checkpoints/ldm` holds the fine-tuned
state (the LoRA tree for "lora"), `checkpoints/base` the frozen base denoiser of a LoRA run, and
`lora/pytorch_lora_weights.safetensors` the EMA LoRA in the diffusers format
(`pipe.load_lora_weights(folder)`), written after training. `workdir/reader.load_trained_ldm`
returns the merged weights, so `python -m ldm_jax.sample`, `evaluate` and `export` read a
fine-tune workdir like any other. A rerun resumes from the fine-tune workdir's own checkpoints.
`lora.text_encoder=True` adds LoRA on the CLIP text encoder (`trainers/finetune_text.py`): the
batches hold caption ids, the LoRA tree is {"unet", "text_encoder"}, the base CLIP is kept in
`text_encoder_base/` and, after training, `text_encoder/` is the base CLIP with the EMA LoRA
merged in (what sampling and export read). Otherwise the text encoder stays frozen.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ldm_jax.config import builders
from ldm_jax.config.options import (
    has_text_encoder_lora,
    is_lora_finetune,
    lora_config,
    train_options,
)
from ldm_jax.data import latents_in_memory as latent_cache
from ldm_jax.interop.lora_diffusers import save_diffusers_lora
from ldm_jax.models.lora import init_lora_params, lora_param_count, merge_lora
from ldm_jax.parallel import sharding
from ldm_jax.parallel.compile_options import compiler_options
from ldm_jax.sampling import images as image_grid
from ldm_jax.trainers import finetune_text
from ldm_jax.trainers import ldm as stage2
from ldm_jax.trainers.conditions import make_conditions
from ldm_jax.trainers.finetune_base import Base, base_dir, copy_text_encoder, load_base
from ldm_jax.trainers.finetune_data import training_arrays
from ldm_jax.training import logging as log
from ldm_jax.training.checkpoint import Checkpointer
from ldm_jax.training.finite_guard import NONFINITE_METRIC, tensor_names
from ldm_jax.training.gradients import accumulate_gradients
from ldm_jax.training.logging import MetricWriter
from ldm_jax.training.loop import run_loop
from ldm_jax.training.sharded_stage import (
    ShardedState,
    check_batch_size,
    check_process_rows,
    compiled_step,
    init_or_restore,
)
from ldm_jax.training.state import TrainState, checked_update, create_state
from ldm_jax.training.step_compiler import memory_analysis
from ldm_jax.workdir import layout

STAGE = "finetune"
METHODS = ("lora", "full")


def _save_once(directory: str, tree: dict[str, Any], meta: dict[str, Any]) -> None:
    ckpt = Checkpointer(directory, 1)
    if ckpt.latest_step() is None:
        ckpt.save(0, tree, meta)
    ckpt.close()


def _put(tree: Any, shardings: Any) -> Any:
    """A host tree as global arrays with `shardings` (every process holds the whole tree)."""
    return jax.tree.map(
        lambda x, s: jax.make_array_from_callback(x.shape, s, lambda idx: x[idx]), tree, shardings
    )


def _inputs(
    config: ml_collections.ConfigDict,
    workdir: str,
    ae_params: Any,
    base: Base,
    meta: dict[str, Any],
    text: finetune_text.TextEncoder | None,
) -> stage2.StageInputs:
    arrays = training_arrays(config, workdir, ae_params, base, text)
    loader = latent_cache.make_latent_loader(
        arrays,
        batch_size=config.train.batch_size,
        seed=config.seed,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
    )
    if meta:
        loader.set_state(meta["data"])
    if text is None:
        conditions = make_conditions(config, ae_params, base.scale_factor, None, workdir)
    else:
        conditions = finetune_text.make_conditions(config, text)
    return stage2.StageInputs(loader, base.scale_factor, conditions)


def lora_state_init_fn(config: ml_collections.ConfigDict, tx, abstract_base: Any):
    """rng -> a fresh LoRA train state (LoRA params of `abstract_base`'s shapes, EMA on)."""
    cfg = lora_config(config)

    def init(rng):
        lora_rng, state_rng = jax.random.split(rng)
        lora = init_lora_params(lora_rng, abstract_base, cfg)
        return create_state(lora, tx, state_rng, use_ema=True)

    return init


def make_lora_train_step(
    config: ml_collections.ConfigDict, tx, scale_factor: float, conditions: Any, merge=None
) -> Callable[[TrainState, Any, dict[str, jax.Array]], tuple[TrainState, dict]]:
    """(LoRA state, frozen base params, batch) -> (state, metrics): the stage-2 loss
    (`ldm.make_loss_fn`) of `merge_lora(base, lora)`, differentiated w.r.t. the LoRA tree.

    `merge(base, lora) -> (denoiser params, extra batch entries)` replaces the U-Net merge
    (`finetune_text.make_merge_fn`: both LoRA trees, the merged CLIP in the batch)."""
    loss_fn = stage2.make_loss_fn(config, scale_factor, conditions)
    if merge is None:
        cfg = lora_config(config)
        merge = lambda base, lora: (merge_lora(base, lora, cfg), {})  # noqa: E731
    opts = train_options(config.train)
    ema_decay = config.train.ema_decay

    def step(state: TrainState, base: Any, batch):
        rng, z_rng, step_rng = jax.random.split(state.rng, 3)

        def lora_loss(lora, b, r):
            params, extra = merge(base, lora)
            return loss_fn(params, b | extra, r)

        grad_fn = jax.value_and_grad(lora_loss, has_aux=True)
        (loss, _), grads = accumulate_gradients(
            grad_fn, state.params, batch, (z_rng, step_rng), opts.grad_accum_steps
        )
        state, report = checked_update(state, loss, grads, tx, rng, ema_decay, opts.skip_nonfinite)
        return state, {"loss": loss, NONFINITE_METRIC: report}

    return step


def _compile_with_base(
    step_fn: Callable[..., Any],
    sharded: ShardedState,
    base: Any,
    base_shardings: Any,
    host_batch: dict[str, np.ndarray],
    global_batch_size: int,
) -> Callable[[TrainState, dict[str, np.ndarray]], tuple[TrainState, dict]]:
    """`sharded_stage.compiled_step` for a step that also reads the frozen base (not donated,
    sharded by `base_shardings`)."""
    batch_sh = sharded.batch_sharding
    check_process_rows(sharded.mesh, batch_sh, global_batch_size)
    abstract_batch = {
        k: jax.ShapeDtypeStruct((global_batch_size,) + v.shape[1:], v.dtype, sharding=batch_sh)
        for k, v in host_batch.items()
    }
    jitted = jax.jit(
        step_fn,
        in_shardings=(sharded.shardings, base_shardings, batch_sh),
        out_shardings=(sharded.shardings, sharding.replicated(sharded.mesh)),
        donate_argnums=0,
        compiler_options=compiler_options(sharded.mesh.devices.flat[0].platform),
    )
    compiled = jitted.lower(
        sharding.abstract_with_shardings(sharded.state, sharded.shardings),
        sharding.abstract_with_shardings(base, base_shardings),
        abstract_batch,
    ).compile()
    log.info("finetune: compiled the LoRA step: %s", memory_analysis(compiled))

    def step(state, batch):
        return compiled(state, base, sharding.put_batch(batch, batch_sh, global_batch_size))

    return step


def _denoiser_shardings(config: ml_collections.ConfigDict, sharded: ShardedState) -> Any:
    """The shardings the denoiser's parameters get on the run's mesh (logical axis rules)."""
    denoiser = builders.build_denoiser(config)
    inputs = builders.denoiser_example_inputs(config)
    init = lambda r: denoiser.init(r, *inputs)["params"]  # noqa: E731
    rng = stage2.init_rng(config)
    return sharding.sharded_abstract(init, rng, sharded.mesh, sharded.rules)[1]


class Frozen(NamedTuple):
    """The base model as a run sees it: on the host, and (LoRA) on the mesh with its shardings."""

    base: Base
    params: Any  # the base denoiser sharded like the model's parameters (LoRA), else None
    shardings: Any
    text: finetune_text.TextEncoder | None = None  # the base CLIP (text-encoder LoRA)


def train_finetune(
    config: ml_collections.ConfigDict, workdir: str, ae_params: Any, writer: MetricWriter
) -> TrainState:
    """Fine-tunes (or resumes) up to `config.train.steps`; returns the state (module docstring).

    `config` is resolved (`resolve_config`) and `ae_params` is the base's first stage.
    """
    tcfg = config.train
    tx = stage2.optimizer(config)
    lora = is_lora_finetune(config)
    copy_text_encoder(config, workdir)
    text = None
    if has_text_encoder_lora(config):
        text = finetune_text.load_text_encoder(config, workdir, base_dir(config))
    base = load_base(config)
    ckpt = Checkpointer(stage2.checkpoint_dir(workdir), tcfg.keep_checkpoints)
    if lora:
        _save_once(
            layout.checkpoint_dir(workdir, "base"),
            {"step": jnp.zeros((), jnp.int32), "params": base.params},
            {"from": base_dir(config), "scale_factor": base.scale_factor},
        )
        abstract = jax.eval_shape(lambda: base.params)
        init_fn = lora_state_init_fn(config, tx, abstract)
        if text is not None:
            init_fn = finetune_text.lora_state_init_fn(config, tx, abstract, text)
    else:
        init_fn = stage2.state_init_fn(config, tx)
    sharded = init_or_restore(init_fn, stage2.init_rng(config), config, ckpt)
    base_sh = _denoiser_shardings(config, sharded)
    if not sharded.meta and not lora:  # A fresh full fine-tune starts from the base.
        params = _put(base.params, base_sh)
        sharded.state = sharded.state.replace(
            params=params, ema_params=jax.tree.map(jnp.copy, params)
        )
    accum = train_options(tcfg).grad_accum_steps
    check_batch_size(STAGE, "train", tcfg.batch_size, sharded.mesh, sharded.rules, accum)
    if lora:
        log.info("finetune: LoRA of %d parameters", lora_param_count(sharded.state.params))
    if sharded.meta:
        log.info("finetune: resuming from step %d", int(sharded.state.step))
    state = sharded.state
    if int(state.step) < tcfg.steps:
        frozen = Frozen(base, _put(base.params, base_sh) if lora else None, base_sh)
        if text is not None:
            args = finetune_text.frozen_arguments(text, frozen.params, base_sh, sharded.mesh)
            frozen = Frozen(base, *args, text)
        state = _run(config, workdir, ae_params, writer, ckpt, sharded, frozen)
    ckpt.close()
    if text is not None and jax.process_index() == 0:
        path = finetune_text.write_outputs(config, workdir, state.ema_params, text)
        log.info("finetune: wrote %s and the merged text encoder", path)
    elif lora and jax.process_index() == 0:
        ema = jax.tree.map(np.asarray, state.ema_params)
        path = save_diffusers_lora(
            layout.lora_dir(workdir),
            ema.get("diffusion_model", {}),
            lora_config(config),
            int(config.model.unet.num_res_blocks),
        )
        log.info("finetune: wrote %s", path)
    return state


def _run(
    config: ml_collections.ConfigDict,
    workdir: str,
    ae_params: Any,
    writer: MetricWriter,
    ckpt: Checkpointer,
    sharded: ShardedState,
    frozen: Frozen,
) -> TrainState:
    """The step loop of `train_finetune` from `sharded.state` up to `config.train.steps`."""
    tcfg = config.train
    tx = stage2.optimizer(config)
    inputs = _inputs(config, workdir, ae_params, frozen.base, sharded.meta, frozen.text)
    loader, scale_factor, conditions = inputs.loader, inputs.scale_factor, inputs.conditions
    keys = stage2.step_keys(config, conditions)
    if config.finetune.prior_preservation.enabled:
        keys += ("weight",)
    batches = ({k: b[k] for k in keys} for b in loader)
    first_batch = next(batches)
    lora = frozen.params is not None
    if lora:
        merge = None if frozen.text is None else finetune_text.make_merge_fn(config)
        step_fn = make_lora_train_step(config, tx, scale_factor, conditions, merge)
        train_step = _compile_with_base(
            step_fn, sharded, frozen.params, frozen.shardings, first_batch, tcfg.batch_size
        )
    else:
        step_fn = stage2.make_train_step(config, tx, scale_factor, conditions)
        train_step = compiled_step(STAGE, step_fn, sharded, first_batch, tcfg.batch_size)
    if frozen.text is None:
        grid_fn = stage2.make_grid_fn(config, conditions, first_batch, ae_params)
    else:
        grid_fn = finetune_text.make_grid_fn(
            config, frozen.text, first_batch, ae_params, frozen.params
        )

    def on_step(step, state):
        every, at_end = tcfg.sample_every, tcfg.get("final_samples", True)
        if (step == tcfg.steps and at_end) or (every and step % every == 0):
            if jax.process_count() > 1 or jax.process_index() != 0:
                return  # Sample grids in single-process runs only.
            ema = state.ema_params
            if lora and frozen.text is None:
                ema = merge_lora(frozen.params, ema, lora_config(config))
            grid = grid_fn(ema, scale_factor)
            image_grid.save_png(layout.sample_path(workdir, step), grid)
            writer.image(step, f"{STAGE}/samples", grid)

    return run_loop(
        name=STAGE,
        state=sharded.state,
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
        nonfinite_names=tensor_names(sharded.state.params),
        skip_nonfinite=train_options(tcfg).skip_nonfinite,
    )
