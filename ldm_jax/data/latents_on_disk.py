"""On-disk latent cache: a tfds dataset (array_record) of first-stage posteriors and conditions.

Layout of a cache folder `D` (a tfds `data_dir` holding one dataset)::

    D/latent_cache/1.0.0/{dataset_info.json, features.json, metadata.json,
                          latent_cache-train.array_record-00000-of-0000N}

Record i holds `mean` and `logvar` (float32 [h, w, c], the posterior of training example i) and
the conditions (e.g. `label` int32 []); any other numeric key written is stored the same way.
`metadata.json` holds the writer's metadata (first-stage step and parameter fingerprint, source
dataset) plus `latent_shape`, `keys` and `format_version`; readers compare it with what they
expect to detect a stale cache (`check_metadata`). The dataset is read back with tfds'
`builder_from_directory` (no builder code or TensorFlow needed) and batched with grain.

Writes are atomic: the dataset is built in a hidden sibling folder `.<name>.tmp-*` and renamed
onto `D` only when complete, so an interrupted write never leaves a cache that opens. This module
knows nothing of models: `encode_chunks` receives an encode function.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from ldm_jax.data import batch_indices, tfds_quiet
from ldm_jax.data import latents_in_memory as latent_cache

DATASET_NAME = "latent_cache"
STORE_VERSION = "1.0.0"
FORMAT_VERSION = 1
FILE_FORMAT = "array_record"
POSTERIOR_KEYS = ("mean", "logvar")
_RESERVED_METADATA = ("format_version", "latent_shape", "keys", "num_examples")


class MissingLatentCacheError(FileNotFoundError):
    """No complete latent cache in the given folder."""


class StaleLatentCacheError(FileNotFoundError):
    """A cache exists but was written from other first-stage weights or data (none up to date)."""


class _LatentCacheBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes one "train" split from an iterator of (key, example); features given at init."""

    VERSION = tfds.core.Version(STORE_VERSION)
    RELEASE_NOTES = {
        STORE_VERSION: "Posterior mean/logvar and conditions of a first-stage encoder."
    }
    code_path = epath.Path(__file__)  # Skips tfds' importlib_resources lookup (see datasets.py).

    def __init__(
        self,
        *,
        examples: Iterable[tuple[int, dict[str, np.ndarray]]],
        features: tfds.features.FeaturesDict,
        metadata: Mapping[str, Any],
        **kwargs: Any,
    ):
        self.name = DATASET_NAME
        self._examples = examples
        self._features = features
        self._metadata = dict(metadata)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="ldm_jax latent cache: first-stage posterior mean/logvar + conditions.",
            features=self._features,
            metadata=tfds.core.MetadataDict(self._metadata),
            disable_shuffling=True,  # Record i is example i: the loader shuffles indices.
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
        del dl_manager
        return {"train": self._examples}

    def _generate_examples(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        raise NotImplementedError  # Examples come from `_split_generators`.


@dataclasses.dataclass(frozen=True)
class LatentStore:
    """An opened, complete latent cache.

    Attributes:
      directory: the cache folder (a tfds data_dir).
      metadata: the writer's metadata plus `latent_shape`, `keys`, `format_version`.
      num_examples: records in the cache.
      latent_shape: (h, w, c) of `mean` and `logvar`.
      dtypes: numpy dtype per key, e.g. {"mean": float32, "logvar": float32, "label": int32}.
      source: random-access tfds `ArrayRecordDataSource` of per-example dicts.
    """

    directory: str
    metadata: dict[str, Any]
    num_examples: int
    latent_shape: tuple[int, int, int]
    dtypes: dict[str, np.dtype]
    source: Sequence[dict[str, Any]]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.dtypes)

    def read(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """Reads records `indices` (one batched read): {"mean": [B, h, w, c], ..., "label": [B]}."""
        examples = self.source.__getitems__([int(i) for i in indices])
        return {
            k: np.stack([np.asarray(e[k], d) for e in examples]) for k, d in self.dtypes.items()
        }

    def load_arrays(self, shard_index: int = 0, shard_count: int = 1) -> dict[str, np.ndarray]:
        """Reads records `shard_index::shard_count` into memory, in order ({key: [n, ...]})."""
        indices = np.arange(shard_index, self.num_examples, shard_count)
        chunks = [self.read(indices[s : s + 4096]) for s in range(0, len(indices), 4096)]
        return {k: np.concatenate([c[k] for c in chunks]) for k in self.dtypes}


def _version_dir(directory: str) -> str:
    return os.path.join(directory, DATASET_NAME, STORE_VERSION)


def is_complete(directory: str) -> bool:
    """Whether `directory` holds a finished cache (written atomically, so present = complete)."""
    return os.path.exists(os.path.join(_version_dir(directory), "metadata.json"))


def open_latent_store(directory: str) -> LatentStore:
    """Opens a complete cache for reading.

    Raises:
      MissingLatentCacheError: `directory` holds no complete cache.
    """
    if not is_complete(directory):
        raise MissingLatentCacheError(f"No latent cache in {directory}.")
    builder = tfds.builder_from_directory(_version_dir(directory))
    metadata = dict(builder.info.metadata)
    if metadata.get("format_version") != FORMAT_VERSION:
        raise StaleLatentCacheError(
            f"The latent cache in {directory} has format_version "
            f"{metadata.get('format_version')}, this ldm_jax reads {FORMAT_VERSION}."
        )
    features = builder.info.features
    return LatentStore(
        directory=directory,
        metadata=metadata,
        num_examples=int(builder.info.splits["train"].num_examples),
        latent_shape=tuple(metadata["latent_shape"]),
        dtypes={k: np.dtype(features[k].np_dtype) for k in metadata["keys"]},
        source=builder.as_data_source(split="train"),
    )


def check_metadata(store: LatentStore, expected: Mapping[str, Any], hint: str = "") -> None:
    """Raises StaleLatentCacheError naming every `expected` field the cache's metadata differs in.

    Values are compared after a JSON round trip (tuples and lists compare equal).
    """
    diffs = [
        f"{k}: cache {store.metadata.get(k)!r}, expected {v!r}"
        for k, v in expected.items()
        if _jsonish(store.metadata.get(k)) != _jsonish(v)
    ]
    if diffs:
        raise StaleLatentCacheError(
            f"The latent cache in {store.directory} is stale ({'; '.join(diffs)}).{hint}"
        )


def _jsonish(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonish(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonish(v) for v in value]
    return value


def _features(first: Mapping[str, np.ndarray]) -> tfds.features.FeaturesDict:
    """Tensor features from the per-example shapes and dtypes of the first chunk."""
    missing = [k for k in POSTERIOR_KEYS if k not in first]
    if missing:
        raise ValueError(f"Latent cache chunks need keys {POSTERIOR_KEYS}; missing {missing}.")
    specs = {}
    for key, value in first.items():
        value = np.asarray(value)
        if value.dtype.kind not in "biuf":  # Captions etc.: add a tfds.features.Text branch.
            raise ValueError(f"Key {key!r}: only numeric arrays are stored, got {value.dtype}.")
        specs[key] = tfds.features.Tensor(shape=value.shape[1:], dtype=value.dtype)
    return tfds.features.FeaturesDict(specs)


def _examples(
    chunks: Iterator[Mapping[str, np.ndarray]], dtypes: Mapping[str, np.dtype]
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Flattens chunks {key: [n, ...]} into (index, {key: [...]}) records."""
    index = 0
    for chunk in chunks:
        if set(chunk) != set(dtypes):
            raise ValueError(f"Chunk keys {sorted(chunk)} differ from {sorted(dtypes)}.")
        arrays = {k: np.asarray(chunk[k], dtypes[k]) for k in dtypes}
        n = len(arrays["mean"])
        if any(len(a) != n for a in arrays.values()):
            raise ValueError("All arrays of a chunk must have the same length.")
        for i in range(n):
            yield index, {k: a[i] for k, a in arrays.items()}
            index += 1


def _remove_leftovers(directory: str) -> None:
    """Deletes temporary folders of earlier interrupted writes to `directory`."""
    parent, base = os.path.split(os.path.abspath(directory))
    for path in glob.glob(os.path.join(parent, f".{base}.tmp-*")):
        shutil.rmtree(path, ignore_errors=True)


def _check_target(directory: str, metadata: Mapping[str, Any], overwrite: bool) -> None:
    """Raises unless `directory` may be written (absent, or replaceable with `overwrite`)."""
    clash = [k for k in _RESERVED_METADATA if k in metadata]
    if clash:
        raise ValueError(f"Reserved metadata keys {clash}.")
    if os.path.exists(directory):
        if not overwrite:
            raise FileExistsError(f"{directory} exists; pass overwrite=True to replace it.")
        if not is_complete(directory) and os.listdir(directory):
            raise FileExistsError(
                f"{directory} exists and is not a latent cache; remove it or write elsewhere."
            )


def write_latent_store(
    directory: str,
    chunks: Iterable[Mapping[str, np.ndarray]],
    metadata: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> LatentStore:
    """Writes a cache atomically and opens it.

    One writer at a time per `directory` (it deletes leftovers of interrupted writes).

    Args:
      directory: the cache folder to create (e.g. "<workdir>/latents").
      chunks: dicts of equal-length arrays, record order = iteration order, e.g.
        {"mean": float32 [n, h, w, c], "logvar": float32 [n, h, w, c], "label": int32 [n]}.
        Consumed lazily, so encoding can stream.
      metadata: JSON-serialisable facts to store (e.g. first-stage step and fingerprint); keys
        `format_version`, `latent_shape`, `keys`, `num_examples` are reserved.
      overwrite: replace an existing cache or empty folder (a folder holding anything else is
        never replaced: FileExistsError).

    Returns:
      The opened cache.
    """
    _check_target(directory, metadata, overwrite)
    chunks = iter(chunks)
    first = next(chunks, None)
    if first is None:
        raise ValueError("No examples to write.")
    features = _features(first)
    dtypes = {k: np.dtype(features[k].np_dtype) for k in first}
    metadata = {
        **metadata,
        "format_version": FORMAT_VERSION,
        "latent_shape": list(np.shape(first["mean"])[1:]),
        "keys": list(dtypes),
    }
    parent, base = os.path.split(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    _remove_leftovers(directory)
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    try:
        builder = _LatentCacheBuilder(
            examples=_examples(_chain(first, chunks), dtypes),
            features=features,
            metadata=metadata,
            data_dir=tmp,
            file_format=FILE_FORMAT,
        )
        with tfds_quiet.quiet():
            builder.download_and_prepare(
                file_format=FILE_FORMAT,
                download_config=tfds.download.DownloadConfig(try_download_gcs=False),
            )
        shutil.rmtree(os.path.join(tmp, "downloads"), ignore_errors=True)
        _replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_latent_store(directory)


def _chain(first: Mapping[str, np.ndarray], rest: Iterator[Mapping[str, np.ndarray]]):
    yield first
    yield from rest


def _replace(tmp: str, directory: str) -> None:
    """Renames `tmp` onto `directory` (between two renames there is no cache, never half one)."""
    if os.path.exists(directory):
        parent, base = os.path.split(os.path.abspath(directory))
        old = tempfile.mkdtemp(prefix=f".{base}.tmp-old-", dir=parent)
        os.rename(directory, os.path.join(old, "cache"))
        os.rename(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, directory)


def encode_chunks(
    encode_fn: latent_cache.EncodeFn,
    chunks: Iterable[Mapping[str, np.ndarray]],
    batch_size: int = 500,
) -> Iterator[dict[str, np.ndarray]]:
    """Encodes {"image": [n, H, W, C], **conditions} chunks into cache chunks, lazily.

    Each chunk is encoded with `latent_cache.encode_arrays` (fixed batches, the last padded), so
    chunks whose length is a multiple of `batch_size` give the same values as encoding the whole
    split at once.

    Yields:
      {"mean": float32 [n, h, w, c], "logvar": float32 [n, h, w, c], **conditions}.
    """
    for chunk in chunks:
        mean, logvar = latent_cache.encode_arrays(encode_fn, chunk["image"], batch_size)
        yield {"mean": mean, "logvar": logvar, **{k: v for k, v in chunk.items() if k != "image"}}


def _read_batch(store: LatentStore, indices: np.ndarray) -> dict[str, np.ndarray]:
    return store.read(indices)  # indices: [B] -> {key: [B, ...]}


def make_store_loader(
    store: LatentStore,
    *,
    batch_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    num_threads: int = 0,
    prefetch: int = 2,
) -> grain.DatasetIterator:
    """Endless shuffled batches read from an on-disk cache; deterministic and resumable.

    Same batches and interface as `latent_cache.make_latent_loader` over the same arrays: every
    process cuts the same shuffled global batches (`batch_indices.global_batch_indices`,
    reshuffled every epoch) and reads only its rows of each, with one batched read.

    Args:
      store: an opened cache (`open_latent_store`).
      batch_size: examples per global batch (this process gets batch_size / shard_count).
      seed: shuffle seed.
      shard_index / shard_count: this process's rows (e.g. `jax.process_index()/_count()`).
      num_threads: background threads reading batches (0: read on `next()`).
      prefetch: batches read ahead when `num_threads > 0`.

    Returns:
      A grain iterator of {"mean": [b, h, w, c], "logvar": [b, h, w, c], "label": [b], ...}
      (b = batch_size / shard_count) with `get_state()`/`set_state()`.
    """
    ds = batch_indices.global_batch_indices(
        store.num_examples,
        global_batch_size=batch_size,
        seed=seed,
        shard_index=shard_index,
        shard_count=shard_count,
    )  # [b]
    ds = ds.map(functools.partial(_read_batch, store))
    options = grain.ReadOptions(
        num_threads=num_threads, prefetch_buffer_size=prefetch if num_threads else 0
    )
    return iter(ds.to_iter_dataset(options))
