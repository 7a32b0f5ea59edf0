"""The examples a fine-tune run trains on: the training split's latents and caption contexts,
and DreamBooth's class examples with per-example loss weights (`trainers/finetune.py`)."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ldm_jax.data import latents_in_memory as latent_cache
from ldm_jax.sampling import images as image_grid
from ldm_jax.sampling.generate import make_sampler
from ldm_jax.trainers import finetune_text, latents
from ldm_jax.trainers.conditions import text_context
from ldm_jax.trainers.finetune_base import Base, base_dir
from ldm_jax.training import logging as log

CLASS_IMAGE_BATCH = 16  # class images sampled per compiled call


def class_prior_arrays(
    config: ml_collections.ConfigDict,
    workdir: str,
    ae_params: Any,
    base: Base,
) -> dict[str, np.ndarray]:
    """DreamBooth's class examples: the base model's samples of `class_prompt`, encoded by the
    first stage ({"mean", "logvar", "context"}, N = `num_class_images`)."""
    prior = config.finetune.prior_preservation
    n, s = int(prior.num_class_images), config.sample
    sample = make_sampler(
        config, s.sampler, s.steps, s.get("timestep_spacing", "leading"), s.get("steps_offset", 1)
    )
    # The base's text encoder (a text-encoder LoRA run's `text_encoder/` is merged at the end).
    cond = text_context(config, [str(prior.class_prompt)], base_dir(config))  # [1, L, D]
    uncond = text_context(config, [""], base_dir(config))  # [1, L, D]
    side = int(config.model.unet.image_size)
    c = int(config.model.unet.out_channels)
    batch = min(CLASS_IMAGE_BATCH, n)
    images = []
    for i in range(0, n, batch):
        images.append(
            np.asarray(
                sample(
                    ae_params,
                    base.params,
                    jnp.repeat(jnp.asarray(cond), batch, axis=0),
                    jnp.asarray(uncond),
                    jax.random.fold_in(jax.random.PRNGKey(config.seed), i),
                    jnp.float32(s.guidance_scale),
                    jnp.float32(s.eta),
                    jnp.float32(base.scale_factor),
                    shape=(batch, side, side, c),
                )
            )
        )
    images = np.concatenate(images)[:n]  # [N, H, W, C]
    if jax.process_index() == 0:
        image_grid.save_png(
            os.path.join(workdir, "samples", "class_images.png"),
            image_grid.make_grid(images[:16], columns=min(8, len(images))),
        )
    encode = latents.make_encode_fn(config, ae_params)
    mean, logvar = latent_cache.encode_arrays(encode, images)
    return {"mean": mean, "logvar": logvar, "context": np.repeat(cond, n, axis=0)}


def training_arrays(
    config: ml_collections.ConfigDict,
    workdir: str,
    ae_params: Any,
    base: Base,
    text: finetune_text.TextEncoder | None = None,
) -> dict[str, np.ndarray]:
    """The training split's latents and contexts (caption ids with `text`, a text-encoder LoRA
    run), plus the class examples and per-example "weight" when prior preservation is on."""
    if text is None:
        arrays = latents.encode_train_set(config, ae_params, workdir)
        arrays.pop("label", None)
    else:
        arrays = finetune_text.train_arrays(config, ae_params, text)
    prior = config.finetune.prior_preservation
    if not prior.enabled:
        return arrays
    log.info("finetune: sampling %d class images of %r", prior.num_class_images, prior.class_prompt)
    extra = class_prior_arrays(config, workdir, ae_params, base)
    if text is not None:
        ids = text.tokenizer([str(prior.class_prompt)])  # [1, L]
        extra["tokens"] = np.repeat(ids, len(extra["mean"]), axis=0)
    n_inst, n_prior = len(arrays["mean"]), len(extra["mean"])
    weight = np.concatenate(
        [np.ones(n_inst, np.float32), np.full(n_prior, prior.weight * n_inst / n_prior, np.float32)]
    )
    keys = [k for k in arrays if k in extra]
    out = {k: np.concatenate([arrays[k], extra[k].astype(arrays[k].dtype)]) for k in keys}
    return out | {"weight": weight}
