"""A non-editable install works from another directory: train the quickstart, sample, convert.

`pip install --no-deps --target SITE` of this checkout (a wheel build: only what packaging
ships), then every CLI runs with `PYTHONPATH=SITE` from a folder outside the repository, with the
quickstart config copied next to it (configs are not installed). Any library module that reads
`configs/` (or anything else of the checkout) by path fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.test_cli import assert_quiet_stderr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow


def _install(tmp_path) -> str:
    """Builds and installs the checkout (copied, so no build files land in it); returns SITE."""
    src, site = tmp_path / "src", tmp_path / "site"
    src.mkdir()
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    shutil.copytree(
        os.path.join(ROOT, "ldm_jax"), src / "ldm_jax", ignore=shutil.ignore_patterns("__pycache__")
    )
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    proc = subprocess.run(
        [*pip, "--target", str(site), str(src)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return str(site)


def _run(cwd, env, *args) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _diffusers_folders(path) -> tuple[str, str]:
    """A tiny diffusers UNet2DModel and VQModel saved with save_pretrained (as the interop
    round-trip tests make them)."""
    from tests.interop import reference as ref
    from tests.interop.test_unet2d_parity import UNET2D_CONFIGS

    ref.torch.set_num_threads(2)
    unet = ref.diffusers.UNet2DModel(**dict(UNET2D_CONFIGS["attn_heads"], sample_size=4))
    vq = dict(ref.VQ_CONFIGS["vq_f4"], block_out_channels=(32, 32, 32), norm_num_groups=32)
    vae = ref.diffusers.VQModel(**vq, scaling_factor=0.5)
    unet.save_pretrained(path / "unet")
    vae.save_pretrained(path / "vqvae")
    return str(path / "unet"), str(path / "vqvae")


def test_installed_package_trains_samples_and_converts_outside_the_checkout(tmp_path, tfds_dir):
    site = _install(tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(os.path.join(ROOT, "configs", "quickstart.py"), work / "quickstart.py")
    env = {**os.environ, "PYTHONPATH": site, "TFDS_DATA_DIR": tfds_dir}

    where = _run(work, env, "-c", "import ldm_jax; print(ldm_jax.__file__)")
    assert where.stdout.strip().startswith(site + os.sep), where.stdout  # not the checkout

    train = _run(
        work,
        env,
        "-m",
        "ldm_jax.train",
        "--config=quickstart.py:tiny",
        "--workdir=wd",
        "--config.autoencoder_train.steps=1",
        "--config.train.steps=1",
    )
    assert json.loads(train.stdout.strip().splitlines()[-1])["workdir"] == "wd"
    assert_quiet_stderr(train.stderr)

    _run(work, env, "-m", "ldm_jax.sample", "--workdir=wd", "--num=2", "--steps=2", "--out=s.png")
    assert np.asarray(Image.open(work / "s.png")).std() > 0

    unet, vae = _diffusers_folders(tmp_path)
    convert = ["-m", "ldm_jax.convert", "diffusers", "--unet", unet, "--vae", vae, "--out", "imp"]
    line = json.loads(_run(work, env, *convert).stdout.strip().splitlines()[-1])
    assert line == {"out": "imp", "source": "diffusers"}
    assert os.path.isfile(work / "imp" / "config.json")
