"""`evaluate --what samples` refuses models the Fashion-MNIST classifier cannot judge."""

from __future__ import annotations

import os

import pytest

from ldm_jax.config.files import load_config_file
from ldm_jax.config.validation import ConfigError
from ldm_jax.evaluation.report import check_scorable

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _config(path: str):
    return load_config_file(os.path.join(ROOT, path))


@pytest.mark.parametrize(
    "path", ["configs/quickstart.py", "configs/autoencoders/fashion_mnist/identity_ldm1.py"]
)
def test_class_conditional_fashion_mnist_is_scorable(path):
    check_scorable(_config(path))


def test_unconditional_emoji_is_refused_naming_data_condition_and_fix():
    with pytest.raises(ConfigError, match="--what reconstruction") as err:
        check_scorable(_config("configs/autoencoders/emoji/identity_ldm1.py"))
    assert "'noto_emoji'" in str(err.value) and "'none'" in str(err.value)
