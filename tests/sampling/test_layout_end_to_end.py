"""The Fashion-MNIST layout-to-image `:tiny` config end to end: trained through the train CLI
(both stages, a few steps), sampled through the sample CLI (a test canvas's layout) and through
`tasks.run` (two layouts from the same noise give different samples), and scored through
`evaluate --what layout` (with a 2-step classifier: the protocol, not the number, is checked)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from ldm_jax.evaluation import classifier
from ldm_jax.sampling import tasks
from ldm_jax.sampling.request import SampleRequest
from ldm_jax.workdir import reader
from tests.cli_runner import run_cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "tasks" / "fashion_mnist" / "layout2img.py"


@pytest.mark.slow
def test_tiny_layout2img_trains_samples_and_is_scored(tmp_path):
    workdir = tmp_path / "run"
    run_cli("ldm_jax.train", f"--config={CONFIG}:tiny", f"--workdir={workdir}")
    out = tmp_path / "grid.png"
    line = run_cli(
        "ldm_jax.sample", f"--workdir={workdir}", "--task=layout", "--layout=test:0",
        "--num=4", "--steps=2", f"--out={out}",
    )  # fmt: skip
    info = json.loads(line.strip().splitlines()[-1])
    assert info["task"] == "layout" and info["num_images"] == 4 and info["layout"]
    assert np.asarray(Image.open(out)).shape[:2] == (70, 70)  # 2 x 2 images of 32, padding 2
    trained = reader.load_trained_ldm(str(workdir))
    images = []
    for name, box in (("sneaker", [0, 0, 0.5, 0.5]), ("bag", [0.3, 0.3, 1, 1])):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps([{"class": name, "box": box}]))
        request = SampleRequest(task="layout", num=1, layout=str(path), steps=2, guidance=4.0)
        images.append(tasks.run(trained, request).images)
    assert images[0].shape == (1, 32, 32, 3)
    assert np.abs(images[0] - images[1]).max() > 1e-4
    classifier_dir = str(tmp_path / "classifier")
    classifier.get_or_train_classifier(classifier_dir, num_steps=2, batch_size=32)
    line = run_cli(
        "ldm_jax.evaluate", f"--workdir={workdir}", "--what=layout", "--num=6", "--steps=2",
        "--batch_size=4", f"--classifier_dir={classifier_dir}",
    )  # fmt: skip
    result = json.loads(line.strip().splitlines()[-1])
    assert result == json.loads((workdir / "eval_layout.json").read_text())
    assert result["chance"] == 0.1 and result["num_layouts"] == 6
    assert 6 <= result["num_objects"] <= 24 and 0.0 <= result["accuracy"] <= 1.0
    assert 0.0 <= result["real_test_canvases"] <= 1.0 and result["protocol"]["steps"] == 2
