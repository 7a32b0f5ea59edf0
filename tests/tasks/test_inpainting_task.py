"""The Fashion-MNIST inpainting and unconditional `:tiny` configs end to end: the inpainting model
trained through the train CLI (both stages, a few steps) and sampled through the sample CLI
(`--task inpaint --image --mask`: the output keeps the known pixels; in process, two images under
the same mask and noise give different holes); the unconditional model trained on the inpainting
workdir's first stage (the shared `model.first_stage` section) and sampled by the plain sample
CLI; then `inpainting.evaluate_workdir` with the unconditional model as the masked-sampling
reference (the protocol and the baselines, not the model's number)."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
from PIL import Image

from ldm_jax.evaluation import inpainting
from ldm_jax.sampling import tasks
from ldm_jax.sampling.images import to_uint8
from ldm_jax.sampling.request import SampleRequest
from ldm_jax.workdir import reader
from tests.cli_runner import run_cli

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "tasks" / "fashion_mnist"
PADDING = 2  # the sample grid's border (`sampling.images.make_grid`)
SIZE = 32


def _image(path: str, seed: int) -> np.ndarray:
    """Writes a 32x32 RGB PNG (the tiny variant's images have 3 channels); returns its pixels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return pixels


def test_tiny_inpainting_and_unconditional_train_sample_and_are_scored(tmp_path):
    inpaint_wd, uncond_wd = tmp_path / "inpaint", tmp_path / "uncond"
    config = CONFIGS / "inpainting.py"
    run_cli("ldm_jax.train", f"--config={config}:tiny", f"--workdir={inpaint_wd}")

    hole = np.zeros((SIZE, SIZE), np.uint8)
    hole[8:24, 4:20] = 255  # white = fill in
    mask = str(tmp_path / "m.png")
    Image.fromarray(hole, "L").save(mask)
    known = hole == 0
    images = [str(tmp_path / f"x{seed}.png") for seed in (0, 1)]
    pixels = _image(images[0], 0)
    _image(images[1], 1)
    out = tmp_path / "inpainted.png"
    stdout = run_cli(
        "ldm_jax.sample", f"--workdir={inpaint_wd}", "--task=inpaint", "--num=1", "--steps=2",
        f"--image={images[0]}", f"--mask={mask}", f"--out={out}",
    )  # fmt: skip
    line = json.loads(stdout.strip().splitlines()[-1])
    assert line["task"] == "inpaint" and line["inpainting"] == "concat"
    assert line["num_images"] == 1 and line["guidance"] is None
    grid = np.asarray(Image.open(out), np.int32)
    assert grid.shape == (SIZE + 2 * PADDING, SIZE + 2 * PADDING, 3)
    tile = grid[PADDING : PADDING + SIZE, PADDING : PADDING + SIZE]
    np.testing.assert_array_equal(tile[known], pixels[known])

    # Two images under the same mask and noise, in process (float outputs; one subprocess less):
    # the holes differ only through the condition, the masked image's latent.
    trained = reader.load_trained_ldm(str(inpaint_wd))
    outputs = [
        tasks.run(trained, SampleRequest(task="inpaint", num=1, image=x, mask=mask, steps=2))
        for x in images
    ]
    # The first is the CLI's sample (up to rounding: the processes compile differently).
    assert np.abs(to_uint8(outputs[0].images[0]).astype(np.int32) - tile).max() <= 1
    holes = [o.images[0][~known] for o in outputs]
    assert np.abs(holes[0] - holes[1]).max() > 1e-5

    # The unconditional model borrows the inpainting workdir's first stage (the same section).
    run_cli(
        "ldm_jax.train", f"--config={CONFIGS / 'unconditional.py'}:tiny",
        f"--workdir={uncond_wd}", "--config.stage=ldm",
        f"--config.train.first_stage_workdir={inpaint_wd}",
    )  # fmt: skip
    out = tmp_path / "uncond.png"
    stdout = run_cli(
        "ldm_jax.sample", f"--workdir={uncond_wd}", "--num=2", "--steps=2", f"--out={out}"
    )
    assert json.loads(stdout.strip().splitlines()[-1])["num_images"] == 2
    # Two 32x32 tiles in one row (columns ceil(sqrt(2)) = 2), 2 px between and around.
    assert np.asarray(Image.open(out)).shape == (SIZE + 2 * PADDING, 2 * SIZE + 3 * PADDING, 3)

    scores = inpainting.evaluate_workdir(
        str(inpaint_wd), num=4, seed=0, sampler=None, steps=2, eta=None, batch_size=4,
        reference_workdir=str(uncond_wd),
    )  # fmt: skip
    methods = ("ldm", "mean_fill", "reconstruction", "masked_sampling")
    for name in methods:
        assert set(scores[name]) == {"psnr_hole_db", "lpips_vgg"}
        assert math.isfinite(scores[name]["psnr_hole_db"]) and scores[name]["psnr_hole_db"] > 0
        assert 0.0 <= scores[name]["lpips_vgg"] < 1.5
    p = scores["protocol"]
    assert (p["num"], p["steps"], p["seed"], p["split"]) == (4, 2, 0, "test")
    assert p["guidance"] is None and p["images_without_hole"] == 0
    assert str(uncond_wd) in p["masked_sampling"]
    masks = inpainting.evaluation_masks(0, 4, SIZE)
    assert scores["mean_hole_fraction"] == pytest.approx(float(masks.mean()))
    assert scores["num_images"] == 4 and scores["reference_ldm_step"] == 3
