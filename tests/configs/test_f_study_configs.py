"""configs/f_study/ldm.py: every (dataset, f) of the f study builds, validates and has the
latent shape and U-Net the experiment describes; its tiny variant trains through the CLI."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from ldm_jax.config import builders
from ldm_jax.config.validation import validate_config
from tests.cli_runner import ROOT, run_cli

CONFIG_FILE = ROOT / "configs" / "f_study" / "ldm.py"


def _module():
    spec = importlib.util.spec_from_file_location("f_study_ldm", CONFIG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dataset", ["fashion_mnist", "emoji"])
@pytest.mark.parametrize("f", [1, 2, 4, 8, 16])
def test_every_member_validates_with_its_latent_shape(dataset, f):
    study = _module()
    config = study.get_config(f"{dataset},{f}")
    validate_config(config)
    side = 32 // f
    h, w, c = builders.latent_shape(config)
    assert (h, w) == (side, side)
    assert c == (config.data.channels if f == 1 else config.model.first_stage.embed_dim)
    unet = config.model.unet
    assert len(unet.channel_mult) == min(3, int(math.log2(side)) + 1)
    assert config.model.first_stage.kind == ("identity" if f == 1 else "kl")
    assert bool(config.train.first_stage_workdir) == (f > 1)
    conditional = dataset == "fashion_mnist"
    assert (config.model.conditioning_key == "crossattn") == conditional
    # The same diffusion and batch for every member (the study's premise).
    base = study.get_config(f"{dataset},4")
    assert config.diffusion.to_dict() == base.diffusion.to_dict()
    assert config.train.batch_size == base.train.batch_size
    # The U-Net builds on its latents (shapes only).
    denoiser = builders.build_denoiser(config)
    assert denoiser is not None


@pytest.mark.parametrize("arg", ["", "mnist,4", "emoji,3", "emoji,x", "fashion_mnist,32"])
def test_bad_arguments_name_the_fix(arg):
    with pytest.raises(ValueError, match="dataset|f="):
        _module().get_config(arg)


@pytest.mark.slow
def test_tiny_member_trains_through_the_cli(tmp_path):
    workdir = tmp_path / "f4"
    run_cli(
        "ldm_jax.train",
        "--config",
        f"{CONFIG_FILE}:fashion_mnist,4,tiny",
        "--workdir",
        str(workdir),
    )
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [m["ldm/loss"] for m in metrics if "ldm/loss" in m]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
