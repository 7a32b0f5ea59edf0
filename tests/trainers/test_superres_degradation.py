"""`train.superres_degradation`: the default leaves the super-resolution condition as it was (the
antialiased bicubic resize, bit for bit); "bsr_light" degrades inside the jitted condition
function from the step's key; bad values and misplaced ones are named at start-up."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ldm_jax.config import defaults
from ldm_jax.config.files import load_config_file
from ldm_jax.config.validation import ConfigError, validate_config
from ldm_jax.trainers import conditions

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny(name: str) -> ml_collections.ConfigDict:
    return load_config_file(os.path.join(ROOT, "configs", name), "tiny")


def _batch() -> dict[str, jax.Array]:
    rng = np.random.default_rng(0)
    return {"image": jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32))}


def test_default_is_the_bicubic_resize_unchanged():
    config = _tiny("paper/bsr_sr.py")
    assert config.train.superres_degradation == "bicubic"
    batch = _batch()
    y, concat = jax.jit(conditions.make_conditions(config).train)(batch, jax.random.PRNGKey(3))
    want = jax.image.resize(batch["image"], (2, 8, 8, 3), "bicubic", antialias=True)  # f = 4
    assert concat is None
    np.testing.assert_array_equal(np.asarray(y), np.asarray(jax.jit(lambda x: want)(0)))


def test_bsr_light_draws_from_the_step_key():
    config = _tiny("paper/bsr_sr.py")
    config.train.superres_degradation = "bsr_light"
    validate_config(config)
    train = jax.jit(conditions.make_conditions(config).train)
    batch = _batch()
    a, _ = train(batch, jax.random.PRNGKey(0))
    assert a.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(train(batch, jax.random.PRNGKey(0))[0]))
    assert not np.array_equal(np.asarray(a), np.asarray(train(batch, jax.random.PRNGKey(1))[0]))
    bicubic = jax.image.resize(batch["image"], (2, 8, 8, 3), "bicubic", antialias=True)
    assert np.abs(np.asarray(a) - np.asarray(bicubic)).max() > 0.05


def test_bad_values_are_named():
    config = _tiny("paper/bsr_sr.py")
    config.train.superres_degradation = "bsr"
    with pytest.raises(ConfigError, match=r"train\.superres_degradation: 'bsr' .*bsr_light"):
        validate_config(config)
    cin = _tiny("paper/cin256_v2.py")
    cin.train.superres_degradation = "bsr_light"
    with pytest.raises(ConfigError, match=r"superres_degradation: .*'class': leave it"):
        validate_config(cin)


def test_older_workdir_configs_default_to_bicubic():
    config = _tiny("paper/bsr_sr.py").to_dict()
    del config["train"]["superres_degradation"]
    filled = defaults.with_defaults(ml_collections.ConfigDict(config))
    assert filled.train.superres_degradation == "bicubic"
