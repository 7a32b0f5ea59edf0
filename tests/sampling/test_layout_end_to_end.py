"""The Fashion-MNIST layout-to-image `:tiny` config end to end: trained through the train CLI
(both stages, a few steps), sampled through `tasks.run` (two layouts from the same noise give
different samples; a test canvas's layout) and scored by `layout_accuracy.evaluate_workdir`
(with a 2-step classifier: the protocol, not the number, is checked)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from ldm_jax.evaluation import classifier, layout_accuracy
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
    trained = reader.load_trained_ldm(str(workdir))
    images = []
    for name, box in (("sneaker", [0, 0, 0.5, 0.5]), ("bag", [0.3, 0.3, 1, 1])):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps([{"class": name, "box": box}]))
        request = SampleRequest(task="layout", num=1, layout=str(path), steps=2, guidance=4.0)
        images.append(tasks.run(trained, request).images)
    assert images[0].shape == (1, 32, 32, 3)
    assert np.abs(images[0] - images[1]).max() > 1e-4
    result = tasks.run(trained, SampleRequest(task="layout", num=1, layout="test:0", steps=2))
    assert result.info["task"] == "layout" and result.info["layout"]
    classifier_dir = str(tmp_path / "classifier")
    classifier.get_or_train_classifier(classifier_dir, num_steps=2, batch_size=32)
    scores = layout_accuracy.evaluate_workdir(
        str(workdir), num=3, steps=2, batch_size=1, classifier_dir=classifier_dir
    )
    assert scores["chance"] == 0.1 and scores["num_layouts"] == 3
    assert 3 <= scores["num_objects"] <= 12 and 0.0 <= scores["accuracy"] <= 1.0
    assert 0.0 <= scores["real_test_canvases"] <= 1.0 and scores["protocol"]["steps"] == 2
