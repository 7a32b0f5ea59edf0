"""The emoji semantic-synthesis `:tiny` config end to end: trained through the train CLI (both
stages, a few steps, on noto_emoji_segmentation prepared in tmp_path), sampled through the sample
CLI (`--task semantic --image labels.png`: one 32x32 sample per map, and two maps from the same
noise give different samples) and scored by `semantic.evaluate_workdir` (the protocol and the
references, not the model's number)."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
from PIL import Image

from ldm_jax.data import emoji_palette
from ldm_jax.evaluation import semantic
from tests.cli_runner import run_cli

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "tasks" / "emoji" / "semantic.py"
PADDING = 2  # the sample grid's border (`sampling.images.make_grid`)
SIZE = 32


def _label_map(path: pathlib.Path, shape: str) -> str:
    """A 32x32 single-channel PNG of class ids: a yellow disc, or a blue square with a dark
    border, on background."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    labels = np.zeros((SIZE, SIZE), np.uint8)
    if shape == "disc":
        labels[(yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 12**2] = emoji_palette.CLASS_NAMES.index(
            "yellow"
        )
    else:
        labels[4:28, 4:28] = emoji_palette.CLASS_NAMES.index("dark")
        labels[6:26, 6:26] = emoji_palette.CLASS_NAMES.index("blue")
    Image.fromarray(labels, "L").save(path)
    return str(path)


def test_tiny_semantic_trains_samples_and_is_scored(tmp_path):
    workdir = tmp_path / "run"
    data_dir = tmp_path / "tfds"
    run_cli(
        "ldm_jax.train", f"--config={CONFIG}:tiny", f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
    )  # fmt: skip
    grids = []
    for shape in ("disc", "square"):
        out = tmp_path / f"{shape}_out.png"
        stdout = run_cli(
            "ldm_jax.sample", f"--workdir={workdir}", "--task=semantic", "--num=1", "--steps=2",
            f"--image={_label_map(tmp_path / f'{shape}.png', shape)}", f"--out={out}",
        )  # fmt: skip
        line = json.loads(stdout.strip().splitlines()[-1])
        assert line["task"] == "semantic" and line["num_images"] == 1 and line["guidance"] is None
        grids.append(np.asarray(Image.open(out), np.int32))
    assert grids[0].shape == (SIZE + 2 * PADDING, SIZE + 2 * PADDING, 3)  # one 32x32 RGB tile
    assert np.abs(grids[0] - grids[1]).max() > 0  # same noise, different maps

    scores = semantic.evaluate_workdir(str(workdir), num=4, steps=2, batch_size=4)
    json.loads(json.dumps(scores))  # JSON-able
    p = scores["protocol"]
    assert (p["num_maps"], p["steps"], p["seed"], p["split"]) == (4, 2, 0, "test")
    assert p["guidance"] is None and p["samples_per_map"] == 1
    names = ("samples", "real_images", "shuffled_maps", "first_stage_reconstructions")
    for name in (*names, "real_images_shuffled_maps"):
        s = scores[name]
        assert 0.0 <= s["miou"] <= 1.0 and 0.0 <= s["pixel_accuracy"] <= 1.0
        assert set(s["per_class_iou"]) == set(emoji_palette.CLASS_NAMES)
    assert scores["miou"] == scores["samples"]["miou"]
    assert scores["chance"] == scores["shuffled_maps"]["miou"]
    # The real test emoji re-derived agree with their own maps (ceiling about 0.94 on all 144)
    # far better than with another emoji's map.
    assert scores["ceiling"] > 0.8
    assert scores["ceiling"] > scores["real_images_shuffled_maps"]["miou"] + 0.2
    assert math.isfinite(scores["seconds"]["sampling"])
