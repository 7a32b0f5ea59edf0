"""The sampler's timestep grid follows the workdir config (`generate.timestep_grid`), so the
sample, evaluate and trainer paths all sample a model on the grid it was made for."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.evaluation import sample_shards
from ldm_jax.sampling.generate import make_generate_fn, timestep_grid
from tests.sampling.tiny_models import random_model, tiny_config


def _config(**sample):
    config = tiny_config("quickstart.py")
    config.sample.update(sample)
    return config


def test_grid_defaults_to_the_config_then_leading():
    assert timestep_grid(tiny_config("quickstart.py")) == ("leading", 1)
    config = _config(timestep_spacing="trailing", steps_offset=0)
    assert timestep_grid(config) == ("trailing", 0)
    assert timestep_grid(config, "linspace", 2) == ("linspace", 2)
    assert timestep_grid(config, None, None) == ("trailing", 0)


def _images(config, *grid):
    model = random_model(config, seed=3)
    generate = make_generate_fn(config, "ddim", 4, *grid)
    labels = np.arange(2, dtype=np.int32)
    out = generate(
        model.ae_params,
        model.ldm_params,
        labels,
        jax.random.PRNGKey(0),
        jnp.float32(2.0),
        jnp.float32(0.0),
        jnp.float32(1.0),
    )
    return np.asarray(out)


def test_generate_uses_the_configs_grid():
    trailing = _images(_config(timestep_spacing="trailing"))
    explicit = _images(tiny_config("quickstart.py"), "trailing", 1)
    leading = _images(tiny_config("quickstart.py"))
    np.testing.assert_array_equal(trailing, explicit)
    assert np.abs(trailing - leading).max() > 1e-3  # the grid changes the result


def test_evaluation_protocol_records_the_grid():
    model = random_model(_config(timestep_spacing="trailing", steps_offset=0))
    common = dict(sampler=None, steps=None, eta=None, guidance=None, seed=0)
    protocol = sample_shards.protocol_for(model, num_samples=8, shard_size=4, **common)
    assert (protocol.timestep_spacing, protocol.steps_offset) == ("trailing", 0)
    override = sample_shards.protocol_for(
        model, num_samples=8, shard_size=4, timestep_spacing="leading", **common
    )
    assert override.timestep_spacing == "leading"
    assert override.to_json()["timestep_spacing"] == "leading"
