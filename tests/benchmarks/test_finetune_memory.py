"""The fine-tuning memory report on 8 fake CPU devices, with the tiny SD v1 U-Net: XLA's
argument bytes agree with the trees', FSDP divides them by about 8, LoRA's optimizer state is
tiny, its loss is the trainer's, and the CLI writes its records (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.benchmarks import finetune_memory as fm
from ldm_jax.config.files import load_config_file
from ldm_jax.models import lora
from ldm_jax.trainers import ldm as train_ldm
from ldm_jax.training.optimizer import optimizer_for

pytestmark = pytest.mark.slow

CONFIG = "configs/sd/sd_v1.py"
# The step's arguments besides the trees: the state's step (int32) and key (uint32 [2]).
STEP_AND_KEY_BYTES = 4 + 8


@pytest.fixture(scope="module")
def config():
    return load_config_file(CONFIG, "tiny")


@pytest.fixture(scope="module")
def full(config):
    """Full fine-tuning records: FSDP batch 1 and 4 per device, replicated batch 1."""
    devices = jax.devices()[:8]
    ft = fm.finetune_config(config)
    return {
        "b1": fm.measure(ft, "full", 1, devices),
        "b4": fm.measure(ft, "full", 4, devices),
        "replicated": fm.measure(fm.finetune_config(config, fsdp=False), "full", 1, devices),
    }


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """LoRA records (float32 and bfloat16 base, batch 1) through the CLI, and its JSON file."""
    out = tmp_path_factory.mktemp("finetune_memory") / "memory.json"
    argv = ["--config", CONFIG, "--config_arg", "tiny", "--mode", "lora", "--batch", "1"]
    argv += ["--base_dtype", "float32", "bfloat16", "--out", str(out)]
    records = fm.main(argv)
    return {r["base_dtype"]: r for r in records}, json.loads(out.read_text())


def _argument_trees(record) -> int:
    t = record["trees_per_device"]
    return sum(t[k] for k in ("params_bytes", "opt_state_bytes", "ema_bytes", "frozen_bytes"))


def test_full_trees_are_the_float32_params_and_two_adam_moments(full):
    r = full["b1"]
    g = r["trees_global"]
    assert r["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1} and r["global_batch"] == 8
    assert g["params_bytes"] == 4 * r["trainable_params"]
    # AdamW's mu and nu (float32, as the params) plus int32 step counts.
    assert 0 < g["opt_state_bytes"] - 2 * g["params_bytes"] <= 16
    assert g["ema_bytes"] == 0 and g["frozen_bytes"] == 0
    # mean + logvar [8, 4, 4, 4] (32-pixel images, f = 8) and context [8, 77, 32], float32.
    assert g["batch_bytes"] == 4 * (2 * 8 * 4 * 4 * 4 + 8 * 77 * 32)


@pytest.mark.parametrize("name", ["b1", "b4", "replicated"])
def test_xla_argument_bytes_are_the_trees_shards(full, name):
    """XLA's per-device argument bytes (CPU: no padding) equal the shards of the trees."""
    r = full[name]
    expected = _argument_trees(r) + r["trees_per_device"]["batch_bytes"] + STEP_AND_KEY_BYTES
    assert r["argument_bytes"] == expected
    assert r["total_bytes"] == (
        r["argument_bytes"]
        + r["output_bytes"]
        - r["alias_bytes"]
        + r["temp_bytes"]
        + r["generated_code_bytes"]
    )


def test_fsdp_divides_the_state_by_about_the_device_count(full):
    sharded, replicated = full["b1"], full["replicated"]
    assert replicated["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1}
    assert (
        replicated["trees_per_device"]["params_bytes"] == replicated["trees_global"]["params_bytes"]
    )
    ratio = replicated["argument_bytes"] / sharded["argument_bytes"]
    # Kernels are split 8 ways; biases and norm scales (replicated) keep it a little under 8.
    assert 6.0 < ratio <= 8.0
    # The donated state comes back sharded alike.
    assert 6.0 < replicated["alias_bytes"] / sharded["alias_bytes"] <= 8.0


def test_batch_4_needs_more_activations_than_batch_1(full):
    b1, b4 = full["b1"], full["b4"]
    assert b4["global_batch"] == 32
    assert b4["trees_per_device"]["batch_bytes"] == 4 * b1["trees_per_device"]["batch_bytes"]
    assert b4["temp_bytes"] > b1["temp_bytes"]
    assert b4["trees_per_device"]["params_bytes"] == b1["trees_per_device"]["params_bytes"]


def test_lora_trains_rank_4_factors_of_the_attention_projections(config, lora_run, full):
    records, _ = lora_run
    r = records["float32"]
    unet = config.model.unet
    c = unet.model_channels * unet.channel_mult[-1]  # middle-block width (its only attention)
    ctx = unet.context_dim
    # attn1: q, k, v, out all [c, c]; attn2: q, out [c, c], k, v [ctx, c]; each r * (in + out).
    assert r["trainable_params"] == 4 * (6 * (c + c) + 2 * (ctx + c))
    assert r["lora_rank"] == 4 and r["lora_targets"] == ["to_q", "to_k", "to_v", "to_out_0"]
    assert r["frozen_params"] == full["b1"]["trainable_params"]
    g = r["trees_global"]
    assert g["params_bytes"] == 4 * r["trainable_params"]
    assert 0 < g["opt_state_bytes"] - 2 * g["params_bytes"] <= 16
    assert g["opt_state_bytes"] < 0.02 * full["b1"]["trees_global"]["opt_state_bytes"]
    # The frozen base is sharded as the full model's params; the LoRA state is replicated.
    assert r["trees_per_device"]["frozen_bytes"] == full["b1"]["trees_per_device"]["params_bytes"]
    assert r["trees_per_device"]["opt_state_bytes"] == g["opt_state_bytes"]
    assert r["argument_bytes"] == (
        _argument_trees(r) + r["trees_per_device"]["batch_bytes"] + STEP_AND_KEY_BYTES
    )
    assert r["argument_bytes"] < full["b1"]["argument_bytes"]


def test_bfloat16_base_halves_the_frozen_bytes(lora_run):
    records, _ = lora_run
    f32, bf16 = records["float32"], records["bfloat16"]
    assert 2 * bf16["trees_global"]["frozen_bytes"] == f32["trees_global"]["frozen_bytes"]
    saved = f32["trees_per_device"]["frozen_bytes"] - bf16["trees_per_device"]["frozen_bytes"]
    assert f32["argument_bytes"] - bf16["argument_bytes"] == saved


def test_cli_writes_the_records(lora_run):
    records, payload = lora_run
    assert payload["jax"] == jax.__version__
    assert [r["base_dtype"] for r in payload["results"]] == ["float32", "bfloat16"]
    assert payload["results"][0] == records["float32"]
    assert "--mode lora" in payload["command"]


def test_lora_loss_at_init_is_the_trainers_loss(config):
    """The LoRA step's loss (its own copy of the trainer's) equals the trainer's step's loss on
    the same state key and batch while the LoRA update is zero (up = 0 at init)."""
    ft = fm.finetune_config(config)
    ft.train.compute_dtype = "float32"
    ft.train.remat = "none"
    tx = optimizer_for(ft.train)
    full_state = train_ldm.init_state(ft, tx)
    # Stand in for pretrained weights: at init the transformers' zero `proj_out` would give
    # every attention projection (and so every LoRA factor) a zero gradient.
    noise = np.random.default_rng(1)
    full_state = full_state.replace(
        params=jax.tree.map(lambda x: x + 0.05 * noise.normal(size=x.shape), full_state.params)
    )
    lcfg = lora.LoraConfig(rank=4)
    lora_state = jax.jit(fm.lora_state_init_fn(lcfg, tx))(full_state.rng, full_state.params)
    lora_state = lora_state.replace(rng=full_state.rng)
    rng = np.random.default_rng(0)
    batch = {
        "mean": rng.normal(size=(2, 4, 4, 4)).astype(np.float32),
        "logvar": np.full((2, 4, 4, 4), -4.0, np.float32),
        "context": rng.normal(size=(2, 77, 32)).astype(np.float32),
    }
    full_step = jax.jit(train_ldm.make_train_step(ft, tx, fm.SD_SCALE_FACTOR))
    lora_step = jax.jit(fm.make_lora_train_step(ft, tx, lcfg, fm.SD_SCALE_FACTOR))
    _, full_metrics = full_step(full_state, batch)
    new_lora, lora_metrics = lora_step(lora_state, full_state.params, batch)
    np.testing.assert_allclose(lora_metrics["loss"], full_metrics["loss"], rtol=1e-6)
    # The warm-up gives the first update a zero learning rate; the second moves the LoRA
    # factors (the `up` leaves leave zero). The base is an argument, not an output: untouched.
    new_lora, _ = lora_step(new_lora, full_state.params, batch)
    ups = [x for p, x in jax.tree_util.tree_leaves_with_path(new_lora.params) if "up" in str(p)]
    assert ups and all(float(jnp.abs(u).max()) > 0 for u in ups)
    assert int(new_lora.step) == 2


def test_too_many_devices_names_the_flag():
    with pytest.raises(ValueError, match="--devices 9: only 8 device"):
        fm._devices(9, "")


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed")
def test_deviceless_tpu_topology_compiles(config):
    devices = fm._devices(8, "v5e:2x4")
    r = fm.measure(fm.finetune_config(config), "lora", 1, devices)
    assert r["platform"] == "tpu" and r["num_devices"] == 8 and r["temp_bytes"] > 0
