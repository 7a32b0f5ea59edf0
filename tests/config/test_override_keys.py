"""A `--config.x` override naming a key the config does not have is refused on one line, with the
closest valid key (`cli_errors.parse_flags`, as `python -m ldm_jax.train` parses its flags)."""

from __future__ import annotations

import os

import pytest
from absl import flags
from ml_collections import config_flags

from ldm_jax import cli_errors

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = "python -m ldm_jax.train"
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.py")
CIN = os.path.join(ROOT, "configs", "paper", "cin256_v2.py") + ":tiny"


def _flag_values(argv: list[str]) -> flags.FlagValues:
    """train's flags: --config (locked, with its --config.x overrides) and --workdir."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "config", flag_values=fv, lock_config=True, sys_argv=argv
    )
    flags.DEFINE_string("workdir", None, "workdir", flag_values=fv)
    return fv


@pytest.mark.parametrize(
    "config, override, suggestion",
    [
        (QUICKSTART, "--config.train.stesp=10", "--config.train.steps"),
        (QUICKSTART, "--config.sampel.steps=3", "--config.sample.steps"),
        (QUICKSTART, "--config.sede=1", "--config.seed"),
        (QUICKSTART, "--config.autoencoder.num_group=16", "--config.autoencoder.num_groups"),
        (CIN, "--config.model.unet.num_head=4", "--config.model.unet.num_heads"),
        (CIN, "--config.diffusion.schedul=linear", "--config.diffusion.schedule"),
    ],
    ids=["train-field", "section", "top-level", "quickstart-network", "paper-unet", "diffusion"],
)
def test_unknown_override_key_suggests_the_closest(config, override, suggestion, capsys):
    argv = [TRAIN, f"--config={config}", "--workdir=w", override]
    with pytest.raises(SystemExit) as e:
        cli_errors.parse_flags(TRAIN, argv, _flag_values(argv))
    assert e.value.code == cli_errors.USAGE_STATUS
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    key = override.split("=")[0]
    assert lines[0].startswith(f"{TRAIN}: error: unknown config key {key} "), lines[0]
    assert lines[0].endswith(f"Did you mean {suggestion}?"), lines[0]


def test_known_override_keys_parse():
    argv = [TRAIN, f"--config={QUICKSTART}", "--workdir=w", "--config.train.steps=10"]
    fv = _flag_values(argv)
    cli_errors.parse_flags(TRAIN, argv, fv)
    assert fv.config.train.steps == 10
