"""Stage-2 inputs: the training split encoded by the frozen first stage, plus its conditions.

The in-memory cache holds, per example, the first stage's latent ("mean", and "logvar" for a KL
first stage, so z is resampled from the posterior every step; "mean" alone for the deterministic
latents of VQ and the identity first stage) and the arrays its condition needs
(`conditions.HOST_KEYS`: labels, token ids, fixed text context, pixels for the image conditions,
segmentation maps). The on-disk cache (`train.latent_cache="disk"`) holds latents and labels.
A VQ first stage's latent is the pre-quantisation h (the reference `encode` for LDM training),
the identity first stage's the image itself; both are used as they are.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from ldm_jax.config import builders
from ldm_jax.config.model_config import has_model_section
from ldm_jax.config.options import train_options
from ldm_jax.config.validation import ConfigError
from ldm_jax.data import latents_in_memory as latent_cache
from ldm_jax.data import latents_on_disk as latent_store
from ldm_jax.data import pipeline
from ldm_jax.trainers import captions, conditions
from ldm_jax.training import logging as log
from ldm_jax.workdir import latent_cache as latent_cache_writer
from ldm_jax.workdir import layout
from ldm_jax.workdir.latent_cache import make_encode_fn

LoaderFactory = Callable[..., Any]


def load_train_split(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """The training split in memory: "image" [N, H, W, C] in [-1, 1], "label" [N] and, where the
    dataset has them, "caption" [N] (str) and "segmentation" [N, H, W]."""
    source = builders.build_data_source(config)
    d = config.data
    if has_model_section(config):
        split = dict(
            pipeline.load_split_dict(source, d.image_size, d.channels, crop=d.get("crop", "center"))
        )
    else:
        images, labels = pipeline.load_split_arrays(source, d.image_size)
        split = {"image": images, "label": labels}
    if split.get("label") is None:
        split["label"] = np.zeros((len(split["image"]),), np.int32)
    return split


def encode_train_set(
    config: ml_collections.ConfigDict, ae_params: Any, workdir: str = ""
) -> dict[str, np.ndarray]:
    """Encodes the training split once: latents and the condition's arrays, in memory."""
    split = load_train_split(config)
    _check_channels(split["image"], config)
    mean, logvar = latent_cache.encode_arrays(make_encode_fn(config, ae_params), split["image"])
    deterministic = builders.has_deterministic_latents(config)
    arrays = {"mean": mean} if deterministic else {"mean": mean, "logvar": logvar}
    kind = builders.condition_kind(config)
    for key in conditions.HOST_KEYS[kind]:
        if key in ("tokens", "context"):
            arrays[key] = captions.caption_arrays(config, split, workdir, key)
        elif key == "segmentation":
            arrays[key] = _required(split, key, config).astype(np.int32)
        else:
            arrays[key] = _required(split, key, config)
    return arrays


def _required(split: dict[str, np.ndarray], key: str, config: ml_collections.ConfigDict):
    if split.get(key) is None:
        raise ConfigError(
            f"config.data.name: dataset {config.data.name!r} has no {key!r} feature, which "
            f"this model's condition ({builders.condition_kind(config)}) needs; use a dataset "
            "that has it (e.g. synthetic_shapes)."
        )
    return split[key]


def _check_channels(images: np.ndarray, config: ml_collections.ConfigDict) -> None:
    got = images.shape[-1]
    if got != config.data.channels:
        raise ConfigError(
            f"config.data.channels={config.data.channels} but dataset {config.data.name!r} has "
            f"{got}-channel images; set --config.data.channels={got}."
        )


def _disk_loader(config: ml_collections.ConfigDict, workdir: str, ae_params: Any) -> Any:
    """The on-disk cache (process 0 writes it when missing; the others wait and open it)."""
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
    return store


def latent_loader_factory(
    config: ml_collections.ConfigDict, workdir: str, ae_params: Any
) -> LoaderFactory:
    """(shard_index=0, shard_count=1) -> a resumable loader of latent batches.

    `config.train.latent_cache`: "memory" encodes the training split on every (re)start;
    "disk" reads `<workdir>/latents` (`python -m ldm_jax.cache_latents`), writing it first when
    missing (process 0 writes, the others wait and open it).
    """
    tcfg = config.train
    if train_options(tcfg).latent_cache == "disk":
        store = _disk_loader(config, workdir, ae_params)
        return functools.partial(
            latent_store.make_store_loader, store, batch_size=tcfg.batch_size, seed=config.seed
        )
    log.info("ldm: encoding the training set with the first stage ...")
    arrays = encode_train_set(config, ae_params, workdir)
    return functools.partial(
        latent_cache.make_latent_loader, arrays, batch_size=tcfg.batch_size, seed=config.seed
    )


def scale_factor_from_batch(
    batch: dict[str, np.ndarray], seed: int, deterministic: bool = False
) -> float:
    """`scale_by_std`: 1 / std of z sampled from the first batch's posteriors (deterministic
    latents, VQ or identity: of the latents themselves)."""
    if deterministic:
        return float(1.0 / np.std(batch["mean"]))
    rng = np.random.default_rng(seed)
    z = batch["mean"] + np.exp(0.5 * batch["logvar"]) * rng.standard_normal(batch["mean"].shape)
    return float(1.0 / np.std(z))
