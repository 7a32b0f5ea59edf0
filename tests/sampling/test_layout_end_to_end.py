"""The Fashion-MNIST layout-to-image `:tiny` config end to end: trained through the train CLI
(both stages, a few steps), sampled through the sample CLI (a test canvas's layout) and through
`tasks.run` (two layouts from the same noise give different samples)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from ldm_jax.sampling import tasks
from ldm_jax.sampling.request import SampleRequest
from ldm_jax.workdir import reader
from tests.cli_runner import run_cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "tasks" / "fashion_mnist" / "layout2img.py"


@pytest.mark.slow
def test_tiny_layout2img_trains_and_samples(tmp_path):
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
