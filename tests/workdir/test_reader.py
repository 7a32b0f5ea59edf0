"""Workdir reading: imported (lean) checkpoints restore, and weights that do not fit the config's
networks fail with a message naming them."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ldm_jax.config import builders
from ldm_jax.sampling.tasks import model_task
from ldm_jax.training.checkpoint import MissingCheckpointError
from ldm_jax.workdir.reader import WorkdirError, load_trained_ldm
from ldm_jax.workdir.writer import write_workdir

MODEL = dict(
    first_stage=dict(
        kind="vq",
        ch=32,
        ch_mult=[1, 1],
        num_res_blocks=1,
        z_channels=3,
        embed_dim=3,
        n_embed=8,
        resolution=8,
    ),
    unet=dict(
        image_size=4,
        in_channels=3,
        out_channels=3,
        model_channels=32,
        channel_mult=[1],
        num_res_blocks=1,
        attention_resolutions=[1],
        num_heads=1,
    ),
    cond_stage=dict(kind="none"),
    conditioning_key=None,
)
SCHEDULE = dict(
    schedule="scaled_linear",
    num_timesteps=1000,
    beta_start=0.0015,
    beta_end=0.0195,
    prediction_type="epsilon",
)


def _params(module, *inputs):
    return nn.unbox(module.init(jax.random.PRNGKey(0), *inputs))["params"]


@pytest.fixture()
def workdir(tmp_path):
    config = ml_collections.ConfigDict({"model": MODEL})
    ae = builders.build_autoencoder(config)
    denoiser = builders.build_denoiser(config)
    ae_params = _params(ae, jnp.zeros((1, 8, 8, 3)))
    ldm_params = _params(denoiser, *builders.denoiser_example_inputs(config))
    out = str(tmp_path / "wd")
    write_workdir(out, MODEL, ae_params, ldm_params, 0.7, SCHEDULE, {"source": "test"})
    return out, ae_params, ldm_params


def test_imported_workdir_round_trips(workdir):
    out, ae_params, ldm_params = workdir
    trained = load_trained_ldm(out)
    assert trained.scale_factor == pytest.approx(0.7) and trained.step == 0
    assert model_task(trained.config.model.to_dict()) == "generate"
    for got, want in ((trained.ae_params, ae_params), (trained.ldm_params, ldm_params)):
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(a, b)
    assert trained.config.sample.guidance_scale == 1.0  # unconditional: no guidance


def test_weights_that_do_not_fit_the_config_are_named(workdir, tmp_path):
    out, *_ = workdir
    path = f"{out}/config.json"
    with open(path) as f:
        config = json.load(f)
    config["model"]["unet"]["model_channels"] = 64
    with open(path, "w") as f:
        json.dump(config, f)
    with pytest.raises(WorkdirError, match="diffusion_model/input_blocks_0_0/kernel"):
        load_trained_ldm(out)
    with pytest.raises(MissingCheckpointError, match="config.json not found"):
        load_trained_ldm(str(tmp_path / "nothing"))
