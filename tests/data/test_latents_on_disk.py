"""On-disk latent cache: round trip, loader order/resume/sharding, atomic writes, staleness."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ldm_jax.data import latents_in_memory as latent_cache
from ldm_jax.data import latents_on_disk as latent_store

N = 70  # Not a multiple of the chunk or batch sizes below.


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "mean": rng.standard_normal((N, 4, 4, 3)).astype(np.float32),
        "logvar": (rng.standard_normal((N, 4, 4, 3)) * 1e3).astype(np.float32),
        "label": np.arange(N, dtype=np.int32) % 10,
        "index": np.arange(N, dtype=np.int64),  # an extra condition key: record identity
    }


def _chunks(arrays: dict[str, np.ndarray], size: int = 32):
    for start in range(0, N, size):
        yield {k: v[start : start + size] for k, v in arrays.items()}


@pytest.fixture(scope="module")
def store(arrays, tmp_path_factory) -> latent_store.LatentStore:
    directory = str(tmp_path_factory.mktemp("cache") / "latents")
    return latent_store.write_latent_store(directory, _chunks(arrays), {"first_stage_step": 7})


def test_round_trip_is_exact_with_dtypes_shape_and_metadata(store, arrays):
    assert store.num_examples == N
    assert store.latent_shape == (4, 4, 3)
    assert store.keys == ("mean", "logvar", "label", "index")
    assert store.metadata["first_stage_step"] == 7
    loaded = store.load_arrays()
    for key, value in arrays.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape
        np.testing.assert_array_equal(loaded[key], value)  # bitwise, in record order
    batch = store.read([69, 0, 33])
    np.testing.assert_array_equal(batch["mean"], arrays["mean"][[69, 0, 33]])
    np.testing.assert_array_equal(batch["label"], [9, 0, 3])


def test_cache_is_a_tfds_dataset_readable_without_ldm_jax(store, arrays):
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(os.path.join(store.directory, "latent_cache", "1.0.0"))
    source = builder.as_data_source(split="train")
    assert len(source) == N
    np.testing.assert_array_equal(source[12]["logvar"], arrays["logvar"][12])
    assert int(source[12]["index"]) == 12


def _take(loader, n):
    return [next(loader) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_loader_matches_the_in_memory_loader_batch_for_batch(store, arrays):
    disk = latent_store.make_store_loader(store, batch_size=8, seed=3)
    memory = latent_cache.make_latent_loader(arrays, batch_size=8, seed=3)
    _assert_batches_equal(_take(disk, 20), _take(memory, 20))  # 20 * 8 > 2 epochs


def test_loader_is_deterministic_reshuffles_and_depends_on_seed(store):
    a = _take(latent_store.make_store_loader(store, batch_size=N // 2, seed=1), 4)
    b = _take(latent_store.make_store_loader(store, batch_size=N // 2, seed=1), 4)
    c = _take(latent_store.make_store_loader(store, batch_size=N // 2, seed=2), 1)
    _assert_batches_equal(a, b)
    assert not np.array_equal(a[0]["label"], c[0]["label"])
    epoch0 = np.concatenate([a[0]["mean"], a[1]["mean"]])
    epoch1 = np.concatenate([a[2]["mean"], a[3]["mean"]])
    assert not np.array_equal(epoch0, epoch1)  # reshuffled
    np.testing.assert_array_equal(np.sort(epoch0.ravel()), np.sort(epoch1.ravel()))  # same set


@pytest.mark.parametrize("num_threads", [0, 2])
def test_loader_resumes_exactly_from_a_mid_epoch_state(store, num_threads):
    loader = latent_store.make_store_loader(store, batch_size=8, seed=5, num_threads=num_threads)
    _take(loader, 3)  # mid-epoch (8 batches per epoch)
    state = json.loads(json.dumps(loader.get_state()))  # survives a checkpoint's JSON
    expected = _take(loader, 12)  # crosses the epoch boundary
    fresh = latent_store.make_store_loader(store, batch_size=8, seed=5, num_threads=num_threads)
    fresh.set_state(state)
    _assert_batches_equal(_take(fresh, 12), expected)


def test_shards_split_each_global_batch_and_match_the_in_memory_loader(store, arrays):
    single = _take(latent_store.make_store_loader(store, batch_size=6, seed=0), 11)  # 1 epoch
    shards = []
    for shard in range(3):
        loader = latent_store.make_store_loader(
            store, batch_size=6, seed=0, shard_index=shard, shard_count=3
        )
        memory = latent_cache.make_latent_loader(
            arrays, batch_size=6, seed=0, shard_index=shard, shard_count=3
        )
        shards.append(_take(loader, 11))
        _assert_batches_equal(shards[-1], _take(memory, 11))
    seen = []
    for step, batch in enumerate(single):
        rows = [s[step]["index"] for s in shards]  # 2 rows per process
        assert all(len(r) == 2 for r in rows)
        np.testing.assert_array_equal(np.concatenate(rows), batch["index"])  # disjoint, covering
        seen.extend(batch["index"])
    assert len(set(seen)) == len(seen) == 66  # one epoch: each record at most once, 4 dropped


def test_interrupted_write_leaves_no_cache_and_no_temp_files(arrays, tmp_path):
    directory = str(tmp_path / "latents")

    def failing():
        yield from _chunks(arrays, 16)
        raise KeyboardInterrupt  # e.g. Ctrl-C while encoding

    with pytest.raises(KeyboardInterrupt):
        latent_store.write_latent_store(directory, failing(), {})
    assert not latent_store.is_complete(directory)
    assert os.listdir(tmp_path) == []
    with pytest.raises(latent_store.MissingLatentCacheError, match="No latent cache"):
        latent_store.open_latent_store(directory)


_KILLED_WRITER = """
import os, signal, sys, numpy as np
from ldm_jax.data import latents_on_disk as latent_store
def chunks():
    for _ in range(4):
        z = np.zeros((8, 2, 2, 1), np.float32)
        yield {"mean": z, "logvar": z}
    os.kill(os.getpid(), signal.SIGKILL)
latent_store.write_latent_store(sys.argv[1], chunks(), {})
"""


def test_sigkill_during_write_leaves_no_valid_cache_and_the_next_write_cleans_up(arrays, tmp_path):
    directory = str(tmp_path / "latents")
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, directory], timeout=300)
    assert proc.returncode == -9
    leftovers = os.listdir(tmp_path)
    assert leftovers and all(n.startswith(".latents.tmp-") for n in leftovers)
    assert not latent_store.is_complete(directory)
    store = latent_store.write_latent_store(directory, _chunks(arrays), {})
    assert store.num_examples == N and os.listdir(tmp_path) == ["latents"]


def test_overwrite_replaces_a_cache_only_when_asked(arrays, tmp_path):
    directory = str(tmp_path / "latents")
    latent_store.write_latent_store(directory, _chunks(arrays), {"tag": "old"})
    with pytest.raises(FileExistsError):
        latent_store.write_latent_store(directory, _chunks(arrays), {"tag": "new"})
    half = {k: v[:40] for k, v in arrays.items()}
    store = latent_store.write_latent_store(directory, [half], {"tag": "new"}, overwrite=True)
    assert store.metadata["tag"] == "new" and store.num_examples == 40
    assert os.listdir(tmp_path) == ["latents"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a latent cache"):
        latent_store.write_latent_store(str(precious), [half], {}, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep"


def test_check_metadata_names_every_stale_field(store):
    latent_store.check_metadata(store, {"first_stage_step": 7, "latent_shape": (4, 4, 3)})
    with pytest.raises(
        latent_store.StaleLatentCacheError, match="first_stage_step: cache 7, expected 8"
    ):
        latent_store.check_metadata(store, {"first_stage_step": 8}, " Rebuild.")


def test_encode_chunks_streams_and_matches_encoding_at_once(arrays):
    images = np.random.default_rng(1).standard_normal((N, 8, 8, 1)).astype(np.float32)

    def encode(x):  # [b, 8, 8, 1] -> [b, 4, 4, 1] twice
        assert len(x) == 10  # fixed batch size (padded last batch)
        pooled = x.reshape(len(x), 4, 2, 4, 2, 1).mean(axis=(2, 4))
        return pooled, -pooled

    chunks = [
        {"image": images[s : s + 20], "label": arrays["label"][s : s + 20]} for s in range(0, N, 20)
    ]
    out = list(latent_store.encode_chunks(encode, chunks, batch_size=10))
    mean, logvar = latent_cache.encode_arrays(encode, images, batch_size=10)
    np.testing.assert_array_equal(np.concatenate([c["mean"] for c in out]), mean)
    np.testing.assert_array_equal(np.concatenate([c["logvar"] for c in out]), logvar)
    np.testing.assert_array_equal(np.concatenate([c["label"] for c in out]), arrays["label"])


def test_write_rejects_missing_posterior_and_non_numeric_keys(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        latent_store.write_latent_store(str(tmp_path / "a"), [{"mean": np.zeros((2, 1))}], {})
    bad = {"mean": np.zeros((2, 1)), "logvar": np.zeros((2, 1)), "caption": np.array(["a", "b"])}
    with pytest.raises(ValueError, match="numeric"):
        latent_store.write_latent_store(str(tmp_path / "b"), [bad], {})
    assert os.listdir(tmp_path) == []
