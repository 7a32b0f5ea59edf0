"""Encodes a workdir's training split with its trained first stage into an on-disk latent cache.

The cache (`ldm_jax.data.latents_on_disk`, default `<workdir>/latents`) stores the posterior mean
and log-variance (zeros for a first stage with deterministic latents: VQ's h, the identity's
pixels) plus the label of every training example, with a fingerprint of the first-stage
parameters and the source split, so a cache written by other weights or for other data is
detected as stale instead of being trained on silently.

    store, written = cache_workdir_latents(workdir)          # what `cache_latents` runs
    store = open_latent_cache(cache_dir(workdir), config, ae_params)   # what training reads
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from ldm_jax.config import builders
from ldm_jax.config.model_config import has_model_section
from ldm_jax.config.options import default_mesh_config
from ldm_jax.data import latents_in_memory as latent_cache
from ldm_jax.data import latents_on_disk as latent_store
from ldm_jax.data import pipeline
from ldm_jax.models.factory import has_deterministic_latents
from ldm_jax.training.checkpoint import MissingCheckpointError
from ldm_jax.workdir import layout
from ldm_jax.workdir.reader import has_first_stage_params, load_config, load_first_stage_params

ENCODE_BATCH = 500  # Same batches as `train_ldm.encode_train_set`, so the values are identical.


def cache_dir(workdir: str) -> str:
    """The default cache folder of a workdir: `<workdir>/latents`."""
    return layout.latent_cache_dir(workdir)


def params_fingerprint(params: Any) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes (hex, 64 characters).

    Logical-partitioning boxes are removed first, so boxed and unboxed trees agree.
    """
    digest = hashlib.sha256()
    leaves, _ = jax.tree_util.tree_flatten_with_path(nn.unbox(params))
    for path, leaf in leaves:
        value = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{value.dtype}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def expected_metadata(config: ml_collections.ConfigDict, ae_params: Any) -> dict[str, Any]:
    """What a cache must record to be valid for `config`'s data and these first-stage weights."""
    d = config.data
    return {
        "first_stage_fingerprint": params_fingerprint(ae_params),
        "source": {
            "dataset": d.name,
            "split": d.train_split,
            "image_size": int(d.image_size),
            "channels": int(d.channels),
        },
    }


def _rebuild_hint(directory: str) -> str:
    workdir = os.path.dirname(os.path.abspath(directory))
    return (
        f" Rebuild it: python -m ldm_jax.cache_latents --workdir {workdir} --out {directory} "
        "--overwrite"
    )


def open_latent_cache(
    directory: str, config: ml_collections.ConfigDict, ae_params: Any
) -> latent_store.LatentStore:
    """Opens a cache and checks it was written from `ae_params` and `config`'s training split.

    Raises:
      MissingLatentCacheError: no complete cache in `directory` (names the command to write one).
      StaleLatentCacheError: other first-stage weights or data (names the differing fields).
    """
    try:
        store = latent_store.open_latent_store(directory)
    except latent_store.MissingLatentCacheError as e:
        workdir = os.path.dirname(os.path.abspath(directory))
        raise latent_store.MissingLatentCacheError(
            f"{e} Write it: python -m ldm_jax.cache_latents --workdir {workdir} --out {directory}"
        ) from None
    expected = expected_metadata(config, ae_params)
    if store.metadata.get("first_stage_fingerprint") != expected["first_stage_fingerprint"]:
        raise latent_store.StaleLatentCacheError(
            f"The latent cache in {directory} was written from other first-stage weights "
            f"(autoencoder step {store.metadata.get('first_stage_step')})."
            + _rebuild_hint(directory)
        )
    latent_store.check_metadata(store, expected, _rebuild_hint(directory))
    if tuple(store.latent_shape) != builders.latent_shape(config):
        raise latent_store.StaleLatentCacheError(
            f"The latent cache in {directory} holds latents of shape {store.latent_shape}, the "
            f"config's first stage makes {builders.latent_shape(config)}."
            + _rebuild_hint(directory)
        )
    return store


def make_encode_fn(config: ml_collections.ConfigDict, ae_params: Any) -> latent_cache.EncodeFn:
    """Jitted images [b, H, W, C] -> (mean, logvar) [b, h, w, c] (as `encode_train_set`);
    a first stage with deterministic latents gives (its latent, zeros): VQ the h before
    quantisation, the identity the images."""
    ae = builders.build_autoencoder(config)
    if has_deterministic_latents(ae):

        @jax.jit
        def encode_deterministic(x):
            h = ae.apply({"params": ae_params}, x, method=ae.encode_to_prequant)
            return h, jax.numpy.zeros_like(h)

        return encode_deterministic

    @jax.jit
    def encode(x):
        posterior = ae.apply({"params": ae_params}, x, method=ae.encode)
        return posterior.mean, posterior.logvar

    return encode


def image_chunks(
    config: ml_collections.ConfigDict, chunk_size: int = 8 * ENCODE_BATCH
) -> Iterator[dict[str, np.ndarray]]:
    """The training split in order, preprocessed, `chunk_size` examples at a time.

    Yields:
      {"image": float32 [n, H, W, C] in [-1, 1], "label": int32 [n]} (zeros if no labels).
    """
    d = config.data
    source = builders.build_data_source(config)
    getitems = getattr(source, "__getitems__", None)
    for start in range(0, len(source), chunk_size):
        indices = list(range(start, min(len(source), start + chunk_size)))
        examples = getitems(indices) if getitems else [source[i] for i in indices]
        if has_model_section(config):
            chunk = pipeline.preprocess_batch(examples, d.image_size, channels=d.channels)
            chunk = {k: v for k, v in chunk.items() if k in ("image", "label")}
        else:
            chunk = pipeline.preprocess_examples(examples, d.image_size)
        if "label" not in chunk:
            chunk["label"] = np.zeros((len(indices),), np.int32)  # [n]
        yield chunk


def write_latent_cache(
    config: ml_collections.ConfigDict,
    ae_params: Any,
    directory: str,
    *,
    ae_step: int | None = None,
    overwrite: bool = False,
    chunk_size: int = 8 * ENCODE_BATCH,
) -> latent_store.LatentStore:
    """Encodes `config`'s training split with `ae_params` and writes the cache (atomically).

    Streams: one chunk of images is in memory at a time.

    Args:
      config: a validated run config (data and autoencoder sections are used).
      ae_params: first-stage parameters.
      directory: the cache folder.
      ae_step: the first stage's training step, stored for messages.
      overwrite: replace an existing cache.
      chunk_size: images read and encoded per chunk (a multiple of 500 keeps values identical
        to `train_ldm.encode_train_set`).
    """
    encode = make_encode_fn(config, ae_params)
    chunks = latent_store.encode_chunks(encode, image_chunks(config, chunk_size), ENCODE_BATCH)
    metadata = {**expected_metadata(config, ae_params), "first_stage_step": ae_step}
    return latent_store.write_latent_store(directory, chunks, metadata, overwrite=overwrite)


def autoencoder_step(workdir: str, config: ml_collections.ConfigDict | None = None) -> int | None:
    """Latest stage-1 checkpoint step of a workdir; None for a first stage without parameters
    (the identity: there is no stage 1), which `config` (default: the workdir's) describes.

    Raises:
      MissingCheckpointError: no stage-1 checkpoint (names the command that trains one).
    """
    config = load_config(workdir) if config is None else config
    if not has_first_stage_params(config):
        return None
    directory = layout.checkpoint_dir(workdir, "autoencoder")
    steps = (
        [int(n) for n in os.listdir(directory) if n.isdigit()] if os.path.isdir(directory) else []
    )
    if not steps:
        raise MissingCheckpointError(
            f"No autoencoder checkpoint in {directory}: train the first stage first, e.g. "
            f"python -m ldm_jax.train --config configs/quickstart.py --workdir {workdir} "
            "--config.stage=autoencoder"
        )
    return max(steps)


def cache_workdir_latents(
    workdir: str,
    config: ml_collections.ConfigDict | None = None,
    *,
    directory: str | None = None,
    overwrite: bool = False,
) -> tuple[latent_store.LatentStore, bool]:
    """Writes a workdir's latent cache unless an up-to-date one exists (`cache_latents`' body).

    Args:
      workdir: a training workdir with a stage-1 checkpoint.
      config: overrides the workdir's config.json (same first-stage architecture).
      directory: cache folder; default `cache_dir(workdir)`.
      overwrite: rewrite even an up-to-date or stale cache.

    Returns:
      (the opened cache, whether it was written now).

    Raises:
      MissingCheckpointError: no workdir or no stage-1 checkpoint.
      StaleLatentCacheError: a cache from other weights/data exists and `overwrite` is False.
    """
    config = ml_collections.ConfigDict(
        (load_config(workdir) if config is None else config).to_dict()
    )
    config.mesh = default_mesh_config()  # This tool runs on whatever devices are here.
    directory = directory or cache_dir(workdir)
    step = autoencoder_step(workdir, config)
    ae_params = load_first_stage_params(workdir, config)
    if latent_store.is_complete(directory) and not overwrite:
        return open_latent_cache(directory, config, ae_params), False
    store = write_latent_cache(config, ae_params, directory, ae_step=step, overwrite=True)
    return store, True


def ensure_latent_cache(
    workdir: str,
    config: ml_collections.ConfigDict,
    ae_params: Any,
    directory: str | None = None,
) -> latent_store.LatentStore:
    """Opens a workdir's up-to-date cache, writing it first if there is none (for the trainer).

    Single-process writer: in multi-process runs let process 0 call this (or run
    `python -m ldm_jax.cache_latents` beforehand), then the others `open_latent_cache`.

    Raises:
      StaleLatentCacheError: a cache from other weights/data exists (never silently replaced).
    """
    directory = directory or cache_dir(workdir)
    if latent_store.is_complete(directory):
        return open_latent_cache(directory, config, ae_params)
    step = autoencoder_step(workdir, config)
    return write_latent_cache(config, ae_params, directory, ae_step=step)
