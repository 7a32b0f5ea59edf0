"""LDM-1 end to end: the identity first stage's `:tiny` config trains through the CLI in pixel
space (no stage 1, no autoencoder checkpoint, the on-disk latent cache holding the images
themselves), samples through the CLI, and a pixel-space U-Net written as a workdir (what
`convert` does for a diffusers UNet2DModel without a VAE) samples too."""

from __future__ import annotations

import json
import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ldm_jax.config import builders
from ldm_jax.data import latents_on_disk as latent_store
from ldm_jax.models import factory
from ldm_jax.models.identity_first_stage import IdentityFirstStage
from ldm_jax.workdir import latent_cache, reader, writer
from tests.cli_runner import run_cli

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "autoencoders" / "fashion_mnist" / "identity_ldm1.py"


def _sample(workdir: pathlib.Path, *args: str) -> np.ndarray:
    out = workdir / "sample.png"
    run_cli("ldm_jax.sample", f"--workdir={workdir}", "--steps=2", f"--out={out}", *args)
    return np.asarray(Image.open(out))


def test_tiny_ldm1_trains_in_pixel_space_and_samples(tmp_path):
    workdir = tmp_path / "ldm1"
    run_cli(
        "ldm_jax.train",
        f"--config={CONFIG}:tiny",
        f"--workdir={workdir}",
        "--config.train.latent_cache=disk",
    )
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [m["ldm/loss"] for m in metrics if "ldm/loss" in m]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert not any(k.startswith("autoencoder/") for m in metrics for k in m)
    assert (workdir / "checkpoints" / "ldm").is_dir()
    assert not (workdir / "checkpoints" / "autoencoder").exists()

    # The cached "latents" are the preprocessed training images, with zero log-variance.
    config = reader.load_config(str(workdir))
    store = latent_store.open_latent_store(str(workdir / "latents"))
    assert tuple(store.latent_shape) == (32, 32, 3) and store.metadata["first_stage_step"] is None
    images = next(latent_cache.image_chunks(config, chunk_size=8))["image"]  # [8, 32, 32, 3]
    cached = store.read(np.arange(8))
    np.testing.assert_allclose(cached["mean"], images, atol=1e-6)
    np.testing.assert_array_equal(cached["logvar"], np.zeros_like(images))
    report = json.loads(run_cli("ldm_jax.cache_latents", f"--workdir={workdir}").splitlines()[-1])
    assert report["status"] == "up to date" and report["latent_shape"] == [32, 32, 3]

    grid = _sample(workdir, "--class=1", "--num=2")
    assert grid.shape == (2 + 34, 2 + 2 * 34, 3)  # one row of two 32x32 RGB images


def test_pixel_space_unet_written_as_a_workdir_samples(tmp_path):
    """`workdir.writer` with `IdentityFirstStage` and no VAE weights, as `convert` would."""
    unet = factory.build_unet(
        dict(
            image_size=8,
            in_channels=3,
            out_channels=3,
            model_channels=32,
            num_res_blocks=1,
            attention_resolutions=(),
            channel_mult=(1, 2),
            num_heads=2,
        )
    )
    x = jnp.zeros((1, 8, 8, 3))
    params = nn.unbox(unet.init(jax.random.PRNGKey(0), x, jnp.zeros((1,), jnp.int32)))["params"]
    workdir = tmp_path / "pixel"
    config = writer.write_diffusers_workdir(
        unet, params, {"in_channels": 3, "sample_size": 8}, IdentityFirstStage(3), {}, {},
        str(workdir),
    )  # fmt: skip
    assert builders.first_stage_kind(config) == "identity"
    assert (config.data.image_size, config.data.channels) == (8, 3)
    assert config.diffusion.scale_factor == 1.0
    assert not (workdir / "checkpoints" / "autoencoder").exists()
    assert reader.load_trained_ldm(str(workdir)).ae_params == {}
    grid = _sample(workdir, "--num=1")
    assert grid.shape == (2 + 10, 2 + 10, 3)
