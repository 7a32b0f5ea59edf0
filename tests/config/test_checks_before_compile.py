"""`trainers.run.run` validates the whole config first: a bad config fails before the workdir is
created or anything is jitted (issue 16: every check runs before anything compiles)."""

from __future__ import annotations

import os

import jax
import pytest

from ldm_jax.config.files import load_config_file
from ldm_jax.config.validation import ConfigError
from ldm_jax.trainers import run as train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(
    "section, field, value, message",
    [
        ("unet", "num_head_channels", 24, r"config\.unet\.num_head_channels: 24 does not divide"),
        ("train", "batch_size", 12, r"config\.train\.batch_size: 12 must be a multiple of 8"),
        ("data", "num_classes", 0, r"config\.data\.num_classes: is 0"),
    ],
)
def test_bad_config_fails_before_the_workdir_and_any_jit(
    section, field, value, message, tmp_path, monkeypatch
):
    config = load_config_file(os.path.join(ROOT, "configs", "quickstart.py"), "tiny")
    config[section][field] = value

    def no_jit(*args, **kwargs):
        raise AssertionError("jax.jit was called before the config was validated")

    monkeypatch.setattr(jax, "jit", no_jit)
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        train.run(config, str(workdir))
    assert jax.device_count() == 8  # the suite's fake devices: the batch check used them
    assert not workdir.exists()
