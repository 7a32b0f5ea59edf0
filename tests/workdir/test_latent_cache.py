"""Latent cache writer: values equal the in-memory encoding, staleness, workdir errors."""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from ldm_jax.config import builders
from ldm_jax.data import latents_on_disk as latent_store
from ldm_jax.trainers import autoencoder as train_autoencoder
from ldm_jax.trainers import latents
from ldm_jax.training.checkpoint import MissingCheckpointError
from ldm_jax.training.optimizer import make_optimizer
from ldm_jax.workdir import latent_cache as latent_cache_writer
from tests.config.test_validation import quickstart_config


@pytest.fixture(scope="module")
def config(tfds_dir):
    config = quickstart_config("tiny")
    config.data.data_dir = tfds_dir
    config.data.train_split = "train[:600]"  # 2 encode batches, the last one padded
    return config


@pytest.fixture(scope="module")
def ae_params(config):
    ae = builders.build_autoencoder(config)
    t = config.autoencoder_train
    tx = make_optimizer(t.learning_rate, t.warmup_steps, t.weight_decay, t.grad_clip)
    return train_autoencoder.init_state(ae, config, tx).params


@pytest.fixture(scope="module")
def cache(config, ae_params, tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("run") / "latents")
    # chunk_size 500: chunks differ from the in-memory path's one array, values must not.
    return latent_cache_writer.write_latent_cache(
        config, ae_params, directory, ae_step=3, chunk_size=500
    )


def test_cache_equals_the_in_memory_encoding_bitwise(cache, config, ae_params):
    expected = latents.encode_train_set(config, ae_params)
    got = cache.load_arrays()
    assert cache.num_examples == 600 and cache.latent_shape == builders.latent_shape(config)
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key].dtype == expected[key].dtype
        np.testing.assert_array_equal(got[key], expected[key])
    assert cache.metadata["first_stage_step"] == 3
    assert cache.metadata["source"]["split"] == "train[:600]"


def test_open_accepts_matching_and_detects_stale_weights_and_data(cache, config, ae_params):
    store = latent_cache_writer.open_latent_cache(cache.directory, config, ae_params)
    assert store.num_examples == 600
    leaves, tree = jax.tree.flatten(ae_params)
    leaves[0] = leaves[0].at[(0,) * leaves[0].ndim].add(1e-6)  # one value of one tensor
    retrained = jax.tree.unflatten(tree, leaves)
    with pytest.raises(latent_store.StaleLatentCacheError, match="other first-stage weights"):
        latent_cache_writer.open_latent_cache(cache.directory, config, retrained)
    other = config.copy_and_resolve_references()
    other.data.train_split = "train"
    with pytest.raises(latent_store.StaleLatentCacheError, match=r"source: .*train\[:600\]"):
        latent_cache_writer.open_latent_cache(cache.directory, other, ae_params)
    with pytest.raises(latent_store.MissingLatentCacheError, match="ldm_jax.cache_latents"):
        latent_cache_writer.open_latent_cache(cache.directory + "_none", config, ae_params)


def test_fingerprint_depends_on_every_value_and_name(ae_params):
    base = latent_cache_writer.params_fingerprint(ae_params)
    assert base == latent_cache_writer.params_fingerprint(jax.tree.map(np.asarray, ae_params))
    assert base == latent_cache_writer.params_fingerprint(nn.unbox(ae_params))
    renamed = {"other": ae_params["encoder"], **ae_params}
    assert latent_cache_writer.params_fingerprint(renamed) != base
    leaves, tree = jax.tree.flatten(ae_params)
    leaves[-1] = np.asarray(leaves[-1]).copy()
    leaves[-1].flat[0] += 1
    assert latent_cache_writer.params_fingerprint(jax.tree.unflatten(tree, leaves)) != base


def test_workdir_errors_name_the_fix(config, tmp_path):
    with pytest.raises(MissingCheckpointError, match="is not a training workdir"):
        latent_cache_writer.cache_workdir_latents(str(tmp_path / "nothing"))
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(config.to_json_best_effort())
    with pytest.raises(
        MissingCheckpointError, match="No autoencoder checkpoint.*stage=autoencoder"
    ):
        latent_cache_writer.cache_workdir_latents(str(workdir))
    assert not os.path.exists(workdir / "latents")
