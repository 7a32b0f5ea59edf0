"""`evaluate --what text2img` on a workdir: the emoji BERT text-to-image config's `:tiny` variant
trained and scored through the CLIs, and two captions giving two samples from the same noise
(the sample CLI on BERT models: tests/trainers/test_paper_configs_train.py; the MiniLM path:
tests/models/test_minilm_text2img.py); models without text conditions are refused.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from ldm_jax.config.defaults import with_defaults
from ldm_jax.config.files import load_config_file
from ldm_jax.config.validation import ConfigError
from ldm_jax.evaluation import text2img
from ldm_jax.workdir import reader
from tests.cli_runner import run_cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
BERT = ROOT / "configs" / "tasks" / "emoji" / "text2img_bert.py"


def test_only_text_models_are_scored():
    config = with_defaults(load_config_file(ROOT / "configs" / "quickstart.py", "tiny"))
    with pytest.raises(ConfigError, match="--what text2img scores text-conditioned models"):
        text2img.check_text2img(config)
    assert text2img.check_text2img(with_defaults(load_config_file(BERT, "tiny"))) == "text"


@pytest.mark.slow
def test_tiny_bert_text2img_trains_and_is_scored(tmp_path):
    workdir = tmp_path / "run"
    run_cli("ldm_jax.train", f"--config={BERT}:tiny", f"--workdir={workdir}")
    assert (workdir / "vocab.txt").is_file()  # built from the synthetic training captions

    # The condition changes the output: the same noise (seed, batch of one), two captions.
    trained = reader.load_trained_ldm(str(workdir))
    kw = dict(sampler="ddim", steps=2, guidance=4.0, eta=0.0, seed=0)
    red, green = (
        text2img.sample_captions(trained, [p], **kw)
        for p in ("a red circle on a blue background", "a green square on a white background")
    )
    assert red.shape == (1, 32, 32, 3) and np.abs(red - green).max() > 1e-4

    line = run_cli(
        "ldm_jax.evaluate", f"--workdir={workdir}", "--what=text2img", "--num=6",
        "--candidates=4", "--steps=2", "--batch_size=4",
    )  # fmt: skip
    result = json.loads(line.strip().splitlines()[-1])
    assert result == json.loads((workdir / "eval_text2img.json").read_text())
    protocol = result["protocol"]
    assert protocol["num_queries"] == 6 and protocol["candidates"] == 4
    assert protocol["chance"] == result["chance"] == 0.25
    assert (protocol["seed"], protocol["sampler"], protocol["steps"]) == (0, "ddim", 2)
    assert protocol["guidance"] == 4.0 and protocol["eta"] == 1.0
    assert result["condition"] == "text" and result["cond_stage"] == "bert"
    for row in ("samples", "first_stage_reconstructions", "nearest_train_caption"):
        for scores in result[row].values():
            assert 0.0 <= scores["accuracy"] <= 1.0 and scores["num_queries"] == 6
    assert result["accuracy"] == result["samples"]["lpips_vgg"]["accuracy"]
