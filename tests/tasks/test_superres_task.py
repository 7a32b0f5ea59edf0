"""The Fashion-MNIST 4x super-resolution `:tiny` config end to end: trained through the train CLI
(both stages, a few steps), sampled through the sample CLI (`--task superres --image`: the output
is the input enlarged 4x, and two inputs from the same noise give different outputs) and scored
by `superres.evaluate_workdir` (the protocol and the references, not the model's number: the
bicubic reference is recomputed with Pillow and numpy)."""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ldm_jax.config import builders
from ldm_jax.data import degradations, pipeline
from ldm_jax.evaluation import superres
from ldm_jax.workdir import reader
from tests.cli_runner import FAST_XLA, ROOT, run_cli

pytestmark = pytest.mark.slow

CONFIG = ROOT / "configs" / "tasks" / "fashion_mnist" / "superres_x4.py"
PADDING = 2  # the sample grid's border (`sampling.images.make_grid`)
LOW = (8, 12)  # low-res input (h, w); the tiny variant's images have 3 channels


def _low_res(path: pathlib.Path, seed: int) -> str:
    """A random 8x12 RGB PNG."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*LOW, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return str(path)


def _start_sample(workdir: pathlib.Path, image: str, out: pathlib.Path) -> subprocess.Popen:
    """`python -m ldm_jax.sample --task superres` in the background (as `run_cli` runs it)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FAST_XLA}".strip()
    args = [f"--workdir={workdir}", "--task=superres", "--num=1", "--steps=2", "--seed=0"]
    return subprocess.Popen(
        [sys.executable, "-m", "ldm_jax.sample", *args, f"--image={image}", f"--out={out}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip


def _bicubic_psnr(workdir: pathlib.Path, num: int) -> float:
    """Mean PSNR of the first `num` test images against Pillow's bicubic enlargement of their
    training degradation, computed in numpy."""
    config = reader.load_config(str(workdir))
    d = config.data
    source = builders.build_data_source(config, "test")
    x = pipeline.load_split_dict(source, d.image_size, d.channels, max_examples=num)["image"]
    low = np.asarray(degradations.bicubic(x, 4), np.float32)  # [N, 8, 8, C]
    psnrs = []
    for image, small in zip(x, low, strict=True):
        up = np.stack(
            [
                np.asarray(Image.fromarray(np.ascontiguousarray(small[..., k]), "F").resize(
                    (d.image_size, d.image_size), Image.Resampling.BICUBIC
                ))
                for k in range(small.shape[-1])
            ],
            axis=-1,
        )  # fmt: skip
        mse = np.mean((np.clip(up, -1, 1).astype(np.float64) - image) ** 2)
        psnrs.append(10 * math.log10(4 / mse))
    return float(np.mean(psnrs))


def test_tiny_superres_trains_samples_and_is_scored(tmp_path):
    workdir = tmp_path / "run"
    run_cli("ldm_jax.train", f"--config={CONFIG}:tiny", f"--workdir={workdir}")
    outs = [tmp_path / f"sr{seed}.png" for seed in (0, 1)]
    procs = [
        _start_sample(workdir, _low_res(tmp_path / f"low{seed}.png", seed), out)
        for seed, out in enumerate(outs)
    ]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        line = json.loads(stdout.strip().splitlines()[-1])
        assert line["task"] == "superres" and line["num_images"] == 1 and line["guidance"] is None
    grids = [np.asarray(Image.open(out), np.int32) for out in outs]
    # One tile, the 8x12 input enlarged 4x, inside the grid's border.
    tile = (4 * LOW[0], 4 * LOW[1])
    assert grids[0].shape == grids[1].shape == (tile[0] + 2 * PADDING, tile[1] + 2 * PADDING, 3)
    assert np.abs(grids[0] - grids[1]).max() > 0  # same noise, different inputs

    scores = superres.evaluate_workdir(
        str(workdir), num=4, seed=0, sampler=None, steps=2, eta=None, batch_size=4
    )
    assert set(superres.METHODS) <= set(scores)
    for name in superres.METHODS:
        assert {"psnr_db", "ssim", "lpips_vgg", "low_res_psnr_db"} <= set(scores[name])
    assert "ground_truth" not in scores  # no class accuracy on the tiny synthetic shapes
    p = scores["protocol"]
    assert (p["num"], p["steps"], p["seed"], p["split"], p["sampler"]) == (4, 2, 0, "test", "ddim")
    assert p["degradation"] == "bicubic" and p["factor"] == 4 and p["low_res_shape"] == [8, 8, 3]
    bicubic = scores["bicubic"]
    assert math.isfinite(bicubic["psnr_db"])
    assert bicubic["psnr_db"] == pytest.approx(_bicubic_psnr(workdir, 4), abs=1e-3)
    assert 0.0 <= bicubic["lpips_vgg"] < 1.0
    # Both enlargements agree with their input far better than with the unseen detail.
    assert bicubic["low_res_psnr_db"] > bicubic["psnr_db"]
    assert scores["nearest"]["low_res_psnr_db"] > scores["nearest"]["psnr_db"]
