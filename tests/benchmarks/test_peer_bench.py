"""Our model benchmarks and the PyTorch peer report the same fields for the same networks
(tiny sizes; no timing assertions: speed is reported by the CLIs, not tested)."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from ldm_jax import bench
from ldm_jax.benchmarks import model_benches
from ldm_jax.benchmarks.peers import diffusers_models
from ldm_jax.benchmarks.peers import torch_benches as peer
from ldm_jax.benchmarks.presets import Preset, get_preset
from ldm_jax.benchmarks.timing import FIELDS
from ldm_jax.models import factory

pytestmark = pytest.mark.slow

TINY = Preset(
    "tiny",
    unet=dict(
        image_size=8,
        in_channels=4,
        out_channels=4,
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(1,),
        num_heads=2,
        use_spatial_transformer=True,
        context_dim=32,
        legacy=False,
    ),
    first_stage=dict(
        kind="kl",
        ch=32,
        ch_mult=(1, 2),
        num_res_blocks=1,
        z_channels=4,
        embed_dim=4,
        resolution=16,
        attn_resolutions=(),
        double_z=True,
    ),
    context_len=5,
    batch=2,
    ae_batch=1,
)


def _check_record(r, bench, batch, items):
    assert set(FIELDS) <= set(r), sorted(set(FIELDS) - set(r))
    assert r["bench"] == bench and r["batch"] == batch and r["repeats"] == 2
    assert r["min_s"] <= r["median_s"]
    # median_s is rounded to 1e-5 s: on a fast machine that alone moves items / median_s by
    # more than 0.1% (a 3 ms median), so allow that rounding on top.
    expected = items / r["median_s"]
    rounding = expected * 0.5e-5 / r["median_s"]
    assert r["items_per_s"] == pytest.approx(expected, abs=1e-3 * expected + rounding + 1e-4)
    assert r["utilisation"] == pytest.approx(
        r["flops_per_iter"] / r["median_s"] / r["matmul_peak_flops_per_s"], rel=1e-2, abs=1e-4
    )
    assert r["peak_rss_bytes"] > 50 * 2**20
    json.dumps(r)  # one JSON line


@pytest.mark.parametrize(
    "name,ours,theirs,batch,items",
    [
        ("unet_forward", model_benches.bench_unet_forward, peer.bench_unet_forward, 2, 2),
        ("unet_train", model_benches.bench_unet_train, peer.bench_unet_train, 2, 2),
        ("autoencoder", model_benches.bench_autoencoder, peer.bench_autoencoder, 1, 1),
    ],
)
def test_ours_and_peer_report_the_same_fields_and_work(name, ours, theirs, batch, items):
    a, b = ours(TINY, 2), theirs(TINY, 2)
    for r in (a, b):
        _check_record(r, name, batch, items)
    assert a["framework"].startswith("jax") and b["framework"].startswith("torch")
    # Same networks, so the same work: XLA's count also has the elementwise ops (a few percent).
    assert 0.85 < a["flops_per_iter"] / b["flops_per_iter"] < 1.15


def test_sample_records_images_and_steps():
    a, b = model_benches.bench_sample(TINY, 2, steps=3), peer.bench_sample(TINY, 2, steps=3)
    for r in (a, b):
        _check_record(r, "sample", 2, 1)  # one image: the U-Net batch is the (cond, uncond) pair
        assert r["steps"] == 3 and r["seconds_per_image"] == pytest.approx(r["median_s"], abs=1e-4)
    assert 0.85 < a["flops_per_iter"] / b["flops_per_iter"] < 1.15


def test_sd_small_cpu_is_the_issue_unet_in_both_frameworks():
    """18,150,852 parameters in our U-Net and in the diffusers twin the peer trains."""
    preset = get_preset("sd_small_cpu")
    unet = factory.build_unet(preset.unet)
    x, t = jnp.zeros((1, *preset.latent_shape)), jnp.zeros((1,), jnp.int32)
    context = jnp.zeros((1, preset.context_len, preset.context_dim))
    params = jax.eval_shape(lambda: nn.unbox(unet.init(jax.random.PRNGKey(0), x, t, context)))
    ours = sum(a.size for a in jax.tree.leaves(params))
    assert ours == diffusers_models.parameter_count(diffusers_models.build_unet(preset))
    assert ours == 18_150_852
    assert preset.batch == 8 and preset.latent_shape == (32, 32, 4)


def test_cli_commands_and_errors():
    with pytest.raises(ValueError, match="Unknown benchmark 'nope'"):
        bench.run_command("nope", "sd_small_cpu", 0, 1, "none", 1)
    with pytest.raises(ValueError, match="neither one of"):
        get_preset("no/such/config.py")
    records = bench.run_command("groupnorm", "sd_small_cpu", 2, 2, "none", 1)
    assert {r["implementation"] for r in records} == {"GroupNorm32", "flax.nn.GroupNorm"}
    assert [r["batch"] for r in records] == [2] * 4
