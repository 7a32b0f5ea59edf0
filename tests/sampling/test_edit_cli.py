"""The sample CLI end to end on a written workdir (a tiny class-conditional model with random
weights): `--task edit --mask` (class-guided inpainting with img2img in the hole), `--task
inpaint` by masked sampling on a model trained without masks, and a one-line flag error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ldm_jax.config.model_config import model_config
from ldm_jax.workdir.writer import write_workdir
from tests.sampling import tiny_models as tm

pytestmark = pytest.mark.slow

FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FAST_XLA}".strip()
    return subprocess.run(
        [sys.executable, "-m", "ldm_jax.sample", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tm.ROOT,
        timeout=600,
    )


def test_edit_and_inpaint_through_the_cli(tmp_path):
    trained = tm.random_model(tm.tiny_config("quickstart.py"))  # grey 32x32, 10 classes + null
    d = trained.config.diffusion
    schedule = dict(
        schedule=d.schedule,
        num_timesteps=d.num_timesteps,
        beta_start=d.beta_start,
        beta_end=d.beta_end,
        prediction_type=d.prediction_type,
    )
    workdir = str(tmp_path / "wd")
    model = model_config(trained.config)
    write_workdir(workdir, model, trained.ae_params, trained.ldm_params, 1.0, schedule, {})
    grey = tm.smooth_image(4)[..., 0]
    image = tm.write_png(tmp_path / "x.png", grey)
    mask = tm.write_png(tmp_path / "m.png", tm.box_mask(8, 8, 16))
    known = tm.box_mask(8, 8, 16) == 0
    common = (f"--workdir={workdir}", f"--image={image}", f"--mask={mask}", "--num=2", "--steps=3")

    out = tmp_path / "edit.png"
    edit = ("--task=edit", "--strength=0.6", "--class=3", "--guidance=3", f"--out={out}")
    proc = _cli(*common, *edit)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["task"] == "edit" and line["strength"] == 0.6 and line["class"] == 3
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 + 34, 2 * 34 + 2)  # one row of two 32x32 tiles, 2 px padding
    for left in (2, 36):
        np.testing.assert_array_equal(grid[2:34, left : left + 32][known], grey[known])

    out = tmp_path / "inpaint.png"
    proc = _cli(*common, "--task=inpaint", f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["task"] == "inpaint" and line["inpainting"] == "masked_sampling"
    np.testing.assert_array_equal(np.asarray(Image.open(out))[2:34, 2:34][known], grey[known])

    bad = _cli(f"--workdir={workdir}", "--task=edit", f"--image={image}", "--strength=1.5")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "python -m ldm_jax.sample: error: --strength must be in (0, 1], got 1.5."
    ]
