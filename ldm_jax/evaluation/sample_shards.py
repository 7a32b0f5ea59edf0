"""Samples for evaluation, streamed to disk in shards: resumable, sharded over devices and hosts.

`<out_dir>/shard_00000.npz, shard_00001.npz, ...` each hold `images` uint8 [S, H, W, C]
(round((x + 1) * 127.5) of the sampler's x in [-1, 1], clipped to [0, 255]), `labels` int32 [S]
(-1 for an unconditional model) and `shard` / `seed` (the shard's index and the run's seed);
the last shard holds the remainder. `manifest.json` records the protocol (`SampleProtocol`).

Shard i is drawn with the key fold_in(PRNGKey(seed), i) and the labels (i * S + j) mod
num_classes (classes cycle, so every class is equally represented up to one sample), so its
images do not depend on how many devices or processes made it. Process p of P makes the shards
p, p + P, p + 2P, ... on its local devices (each shard's batch split over them: S must be a
multiple of the local device count), then all processes wait for each other. A shard already
on disk and readable is kept (a rerun after a kill resumes); a truncated or corrupt one is made
again with a warning. Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ldm_jax.config import builders
from ldm_jax.config.validation import ConfigError
from ldm_jax.sampling.generate import make_generate_fn, timestep_grid
from ldm_jax.training import logging as log
from ldm_jax.workdir.reader import TrainedLDM

MANIFEST = "manifest.json"
LABEL_RULE = "labels (global index) mod num_classes; -1 for unconditional models"
QUANTISATION = "uint8 round((x + 1) * 127.5) clipped to [0, 255]"
GENERATIVE_CONDITIONS = ("class", "adm", "none")

# (labels int32 [S], key) -> images uint8 [S, H, W, C], sharded over the local devices.
ShardFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class SampleProtocol:
    """Everything that defines a set of evaluation samples (written as `manifest.json`)."""

    workdir: str
    ldm_step: int
    sampler: str
    steps: int
    eta: float
    guidance: float
    seed: int
    num_samples: int
    shard_size: int
    image_shape: tuple[int, int, int]  # (H, W, C)
    num_classes: int  # 0: unconditional
    label_rule: str = LABEL_RULE
    quantisation: str = QUANTISATION
    timestep_spacing: str = "leading"
    steps_offset: int = 1

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.shard_size)

    def shard_rows(self, index: int) -> int:
        """Samples in shard `index` (the last one holds the remainder)."""
        return min(self.shard_size, self.num_samples - index * self.shard_size)

    def shard_labels(self, index: int) -> np.ndarray:
        """int32 [shard_size]: the labels shard `index` is sampled with (-1: unconditional)."""
        rows = np.arange(index * self.shard_size, (index + 1) * self.shard_size)
        if self.num_classes == 0:
            return np.full(rows.shape, -1, np.int32)
        return (rows % self.num_classes).astype(np.int32)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["image_shape"] = list(self.image_shape)
        return out


def protocol_for(
    trained: TrainedLDM,
    *,
    sampler: str | None,
    steps: int | None,
    eta: float | None,
    guidance: float | None,
    seed: int,
    num_samples: int,
    shard_size: int,
    timestep_spacing: str | None = None,
) -> SampleProtocol:
    """The protocol of sampling `trained` (None: the workdir config's `sample` settings).

    Raises:
      ConfigError: for a model that is not class-conditional or unconditional, or bad sizes.
    """
    config = trained.config
    kind = builders.condition_kind(config)
    if kind not in GENERATIVE_CONDITIONS:
        raise ConfigError(
            f"--what generative samples class-conditional or unconditional models; this "
            f"workdir's model is conditioned on {kind!r} (see the other --what modes)."
        )
    if num_samples < 1 or shard_size < 1:
        raise ConfigError(
            f"--num_samples ({num_samples}) and --batch_size ({shard_size}) must be positive."
        )
    s = config.sample
    d = config.data
    side = int(d.image_size)
    spacing, offset = timestep_grid(config, timestep_spacing)
    return SampleProtocol(
        workdir=os.path.abspath(trained.workdir) if trained.workdir else "",
        ldm_step=int(trained.step),
        sampler=sampler or s.sampler,
        steps=int(steps or s.steps),
        eta=float(s.eta if eta is None else eta),
        guidance=float(s.guidance_scale if guidance is None else guidance),
        seed=int(seed),
        num_samples=int(num_samples),
        shard_size=int(shard_size),
        image_shape=(side, side, int(d.get("channels", 1) or 1)),
        num_classes=int(d.num_classes) if kind in ("class", "adm") else 0,
        timestep_spacing=spacing,
        steps_offset=offset,
    )


def shard_path(out_dir: str, index: int) -> str:
    return os.path.join(out_dir, f"shard_{index:05d}.npz")


def quantise(images: jax.Array) -> jax.Array:
    """[..] float in [-1, 1] -> uint8 round((x + 1) * 127.5), clipped to [0, 255]."""
    x = jnp.round((images.astype(jnp.float32) + 1.0) * 127.5)
    return jnp.clip(x, 0.0, 255.0).astype(jnp.uint8)


def make_shard_fn(trained: TrainedLDM, protocol: SampleProtocol, devices: Sequence[Any]) -> ShardFn:
    """One compiled program per shard: the batch split over `devices` (a data-parallel mesh),
    parameters replicated; the noise follows the key, not the split (partitionable threefry).

    Raises:
      ConfigError: when the shard size is not a multiple of the device count.
    """
    if protocol.shard_size % len(devices):
        raise ConfigError(
            f"--batch_size={protocol.shard_size} (samples per shard) must be a multiple of the "
            f"{len(devices)} local devices."
        )
    mesh = Mesh(np.asarray(devices), ("data",))
    batch = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    generate = make_generate_fn(
        trained.config,
        protocol.sampler,
        protocol.steps,
        protocol.timestep_spacing,
        protocol.steps_offset,
    )
    params = jax.device_put((trained.ae_params, trained.ldm_params), replicated)
    scalars = jax.device_put(
        jnp.asarray([protocol.guidance, protocol.eta, trained.scale_factor], jnp.float32),
        replicated,
    )

    @jax.jit
    def program(params, scalars, labels, key):
        images = generate(*params, labels, key, scalars[0], scalars[1], scalars[2])
        return jax.lax.with_sharding_constraint(quantise(images), batch)  # [S, H, W, C]

    def shard_fn(labels: np.ndarray, key: jax.Array) -> jax.Array:
        labels = jax.device_put(np.maximum(labels, 0), batch)  # unconditional: ignored
        return program(params, scalars, labels, jax.device_put(key, replicated))

    return shard_fn


def _atomic_write(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, mode) as f:
        write(f)
    os.replace(tmp, path)


def read_shard(path: str, protocol: SampleProtocol, index: int) -> dict[str, np.ndarray] | None:
    """The arrays of a shard file if it is complete and fits the protocol, else None."""
    try:
        with np.load(path) as f:
            shard = {k: f[k] for k in ("images", "labels", "shard", "seed")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    rows = protocol.shard_rows(index)
    ok = (
        shard["images"].dtype == np.uint8
        and shard["images"].shape == (rows, *protocol.image_shape)
        and shard["labels"].shape == (rows,)
        and int(shard["shard"]) == index
        and int(shard["seed"]) == protocol.seed
    )
    return shard if ok else None


def check_manifest(out_dir: str, protocol: SampleProtocol) -> None:
    """Raises ConfigError naming every field in which `out_dir`'s manifest differs."""
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.exists(path):
        return
    with open(path) as f:
        found = json.load(f)
    want = protocol.to_json()
    fields = sorted(k for k in set(found) | set(want) if found.get(k) != want.get(k))
    if fields:
        diffs = "; ".join(f"{k}: {found.get(k)!r} on disk, {want.get(k)!r} now" for k in fields)
        raise ConfigError(
            f"{out_dir} holds samples of another protocol ({diffs}). Pass another "
            "--samples_dir, or delete that folder to replace them."
        )


def generate_shards(
    trained: TrainedLDM,
    protocol: SampleProtocol,
    out_dir: str,
    devices: Sequence[Any] | None = None,
    shard_fn: ShardFn | None = None,
) -> dict[str, int]:
    """Makes this process's missing shards of `protocol` in `out_dir` (see the module docstring).

    Args:
      trained: the model.
      protocol: what to sample; must match `out_dir`'s manifest when there is one.
      out_dir: the shard folder (created; shared by every process).
      devices: this process's devices to split each shard over (default: all local devices).
      shard_fn: replaces the sampler (tests); default `make_shard_fn`.

    Returns:
      {"made": shards made by this process, "kept": its shards already on disk}.
    """
    os.makedirs(out_dir, exist_ok=True)
    check_manifest(out_dir, protocol)
    if jax.process_index() == 0:
        text = json.dumps(protocol.to_json(), indent=2)
        _atomic_write(os.path.join(out_dir, MANIFEST), lambda f: f.write(text), "w")
    mine = range(jax.process_index(), protocol.num_shards, jax.process_count())
    todo = []
    for i in mine:
        path = shard_path(out_dir, i)
        if read_shard(path, protocol, i) is not None:
            continue
        if os.path.exists(path):
            log.warning("%s is truncated or does not fit the protocol; making it again.", path)
        todo.append(i)
    if todo and shard_fn is None:
        shard_fn = make_shard_fn(trained, protocol, devices or jax.local_devices())
    key = jax.random.PRNGKey(protocol.seed)
    total = sum(protocol.shard_rows(i) for i in mine)
    done = total - sum(protocol.shard_rows(i) for i in todo)
    bar = tqdm.tqdm(
        total=total,
        initial=done,
        desc="evaluation samples",
        unit="img",
        dynamic_ncols=True,
        disable=jax.process_index() != 0,
    )
    for i in todo:
        labels = protocol.shard_labels(i)  # [S]
        images = np.asarray(shard_fn(labels, jax.random.fold_in(key, i)))  # [S, H, W, C]
        rows = protocol.shard_rows(i)
        arrays = dict(
            images=images[:rows],
            labels=labels[:rows],
            shard=np.int64(i),
            seed=np.int64(protocol.seed),
        )
        _atomic_write(shard_path(out_dir, i), lambda f, a=arrays: np.savez(f, **a))
        bar.update(rows)
    bar.close()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"sample_shards:{out_dir}")
    return {"made": len(todo), "kept": len(mine) - len(todo)}


def load_manifest(out_dir: str) -> SampleProtocol:
    """The protocol in `out_dir/manifest.json`."""
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {out_dir} holds no evaluation samples.")
    with open(path) as f:
        found = json.load(f)
    found["image_shape"] = tuple(found["image_shape"])
    return SampleProtocol(**found)


def iter_samples(out_dir: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images uint8 [S, H, W, C], labels int32 [S]) of every shard of `out_dir`, in order, one
    shard in memory at a time (50k large images need not fit at once).

    Raises:
      FileNotFoundError: naming the missing or unreadable shards (before anything is yielded
        when shards are missing; at the shard when one is unreadable).
    """
    protocol = load_manifest(out_dir)
    paths = [shard_path(out_dir, i) for i in range(protocol.num_shards)]
    missing = [i for i, path in enumerate(paths) if not os.path.exists(path)]
    if missing:
        _missing_error(out_dir, protocol, missing)
    for i, path in enumerate(paths):
        shard = read_shard(path, protocol, i)
        if shard is None:
            _missing_error(out_dir, protocol, [i])
        yield shard["images"], shard["labels"].astype(np.int32)


def _missing_error(out_dir: str, protocol: SampleProtocol, missing: list[int]) -> NoReturn:
    names = ", ".join(os.path.basename(shard_path(out_dir, i)) for i in missing[:5])
    more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
    raise FileNotFoundError(
        f"{out_dir}: {len(missing)} of {protocol.num_shards} shards are missing or unreadable: "
        f"{names}{more}. Run the same command again to make them."
    )


def load_samples(out_dir: str) -> tuple[np.ndarray, np.ndarray, SampleProtocol]:
    """All samples of `out_dir`, in order.

    Returns:
      (images uint8 [N, H, W, C], labels int32 [N] (-1: unconditional), the protocol).

    Raises:
      FileNotFoundError: naming the missing or unreadable shards.
    """
    protocol = load_manifest(out_dir)
    shards = [read_shard(shard_path(out_dir, i), protocol, i) for i in range(protocol.num_shards)]
    missing = [i for i, s in enumerate(shards) if s is None]
    if missing:
        _missing_error(out_dir, protocol, missing)
    images = np.concatenate([s["images"] for s in shards])  # [N, H, W, C]
    labels = np.concatenate([s["labels"] for s in shards]).astype(np.int32)  # [N]
    return images, labels, protocol
