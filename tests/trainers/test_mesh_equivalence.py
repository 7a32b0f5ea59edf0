"""One tiny training on five meshes of 8 fake CPU devices: same losses, sharded by the rules.

Meshes (data, fsdp, tensor): 1x1x1 (one device), 8x1x1 (pure data parallel), 2x4x1 (data and
FSDP), 4x1x2 (data and tensor parallel) and 1x8x1 (pure FSDP).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs.quickstart import get_config
from ldm_jax.parallel import sharding
from ldm_jax.trainers import autoencoder as train_autoencoder
from ldm_jax.trainers import ldm as train_ldm
from ldm_jax.training.sharded_stage import ShardedState, compiled_step

pytestmark = pytest.mark.slow

MESHES = [(1, 1, 1), (8, 1, 1), (2, 4, 1), (4, 1, 2), (1, 8, 1)]
STEPS = 5
BATCH = 8


def _config(mesh_shape):
    config = get_config("tiny")
    config.mesh.update(dict(zip(sharding.MESH_AXES, mesh_shape, strict=True)))
    config.train.batch_size = BATCH
    return config


def _mesh(config):
    n = math.prod(config.mesh[a] for a in sharding.MESH_AXES)
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:n])
    return mesh, sharding.logical_axis_rules(config.mesh)


def _latent_batches(config):
    h, w, c = train_ldm.builders.latent_shape(config)
    rng = np.random.default_rng(0)
    return [
        {
            "mean": rng.standard_normal((BATCH, h, w, c)).astype(np.float32),
            "logvar": rng.uniform(-4, -1, (BATCH, h, w, c)).astype(np.float32),
            "label": rng.integers(0, 10, (BATCH,)).astype(np.int32),
        }
        for _ in range(STEPS)
    ]


def _run_ldm(mesh_shape):
    config = _config(mesh_shape)
    mesh, rules = _mesh(config)
    tx = train_ldm.optimizer(config)
    init = train_ldm.state_init_fn(config, tx)
    state, shardings = sharding.create_sharded(init, train_ldm.init_rng(config), mesh, rules)
    sharded = ShardedState(state, shardings, {}, mesh, rules)
    batches = _latent_batches(config)
    step = compiled_step(
        "ldm", train_ldm.make_train_step(config, tx, 0.7), sharded, batches[0], BATCH
    )
    losses = []
    for batch in batches:
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return config, init, state, losses


def _run_autoencoder(mesh_shape):
    config = _config(mesh_shape)
    config.autoencoder_train.batch_size = BATCH
    mesh, rules = _mesh(config)
    ae = train_ldm.builders.build_autoencoder(config)
    tx = train_autoencoder.optimizer_for(config.autoencoder_train)
    init = train_autoencoder.state_init_fn(ae, config, tx)
    state, shardings = sharding.create_sharded(init, jax.random.PRNGKey(0), mesh, rules)
    sharded = ShardedState(state, shardings, {}, mesh, rules)
    rng = np.random.default_rng(1)
    size = config.data.image_size
    images = [rng.uniform(-1, 1, (BATCH, size, size, 1)).astype(np.float32) for _ in range(STEPS)]
    step_fn = train_autoencoder.make_train_step(ae, tx, 1e-6, 1.0)
    step = compiled_step("autoencoder", step_fn, sharded, {"image": images[0]}, BATCH)
    losses = []
    for x in images:
        state, metrics = step(state, {"image": x})
        losses.append(float(metrics["loss"]))
    return losses


def test_autoencoder_losses_match_across_meshes():
    # One mesh with all three axes in use: batch over data, kernels over fsdp and tensor.
    reference = _run_autoencoder((1, 1, 1))
    np.testing.assert_allclose(_run_autoencoder((2, 2, 2)), reference, rtol=1e-5)


def _expected_spec(names, shape, mesh_axes_sizes):
    """The rules table read by hand: embed/conv_in -> fsdp, mlp/heads/conv_out -> tensor."""
    table = {"embed": "fsdp", "conv_in": "fsdp", "mlp": "tensor", "heads": "tensor"}
    table["conv_out"] = "tensor"
    out = []
    for name, dim in zip(names, shape, strict=True):
        axis = table.get(name)
        size = mesh_axes_sizes.get(axis, 1)
        out.append(axis if axis and size > 1 and dim % size == 0 else None)
    return P(*out)


def _check_shardings(run, mesh_shape):
    """Every parameter (and its EMA and Adam moments) is sharded as the rules say."""
    config, init, state, _ = run
    sizes = dict(zip(sharding.MESH_AXES, mesh_shape, strict=True))
    boxed = jax.eval_shape(init, train_ldm.init_rng(config)).params
    names = jax.tree.leaves(nn.get_partition_spec(boxed), is_leaf=lambda x: isinstance(x, P))
    leaves = jax.tree_util.tree_leaves_with_path(state.params)
    assert len(names) == len(leaves)
    sharded = 0
    for spec_names, (path, value) in zip(names, leaves, strict=True):
        padded = tuple(spec_names) + (None,) * (value.ndim - len(tuple(spec_names)))
        want = _expected_spec(padded, value.shape, sizes)
        got = value.sharding.spec
        assert tuple(got) + (None,) * (value.ndim - len(got)) == tuple(want), jax.tree_util.keystr(
            path
        )
        sharded += any(a is not None for a in want)
    # EMA and the Adam moments are sharded like the parameters.
    adam = state.opt_state[-1][0]
    for tree in (state.ema_params, adam.mu, adam.nu):
        for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(state.params), strict=True):
            assert a.sharding.spec == b.sharding.spec
    if math.prod(mesh_shape[1:]) > 1:
        assert sharded > len(leaves) // 4  # Most kernels are split, not replicated.
    else:
        assert sharded == 0  # Pure data parallelism replicates every parameter.


def _check_known_kernels(ldm_runs):
    fsdp = ldm_runs[(2, 4, 1)][2].params["diffusion_model"]
    # A 3x3 conv [3, 3, 32, 64]: input channels over fsdp.
    conv = fsdp["input_blocks_3_0"]["in_layers_2"]["kernel"]
    assert conv.shape == (3, 3, 32, 64) and conv.sharding.spec == P(None, None, "fsdp", None)
    tensor = ldm_runs[(4, 1, 2)][2].params["diffusion_model"]
    attn = tensor["input_blocks_3_1"]["transformer_blocks_0"]
    assert attn["attn1"]["to_q"]["kernel"].sharding.spec == P(None, "tensor")
    assert attn["attn1"]["to_out_0"]["kernel"].sharding.spec == P("tensor", None)
    assert attn["ff"]["net_2"]["kernel"].sharding.spec == P("tensor", None)
    # The first conv reads the 2 latent channels: 2 is not divisible by 8, so it stays whole.
    first = ldm_runs[(1, 8, 1)][2].params["diffusion_model"]["input_blocks_0_0"]["kernel"]
    assert first.shape[2] == 2 and first.sharding.spec == P(None, None, None, None)
    # Each device holds 1/8 of an FSDP-sharded kernel.
    big = ldm_runs[(1, 8, 1)][2].params["diffusion_model"]["input_blocks_3_0"]["in_layers_2"]
    shard = big["kernel"].addressable_shards[0].data
    assert shard.shape == (3, 3, 4, 64)


def test_five_meshes_give_the_same_losses_and_shard_as_the_rules_say():
    # One test, so the five compilations happen once even when pytest-xdist splits the module.
    runs = {shape: _run_ldm(shape) for shape in MESHES}
    reference = runs[(1, 1, 1)][3]
    assert len(set(reference)) == STEPS  # The loss moves: the comparison is not vacuous.
    for shape in MESHES:
        np.testing.assert_allclose(runs[shape][3], reference, rtol=1e-5, err_msg=str(shape))
        _check_shardings(runs[shape], shape)
    _check_known_kernels(runs)
