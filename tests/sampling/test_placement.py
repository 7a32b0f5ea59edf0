"""Sampling with the weights replicated over 8 devices and each batch split equals one device."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from ldm_jax.sampling import placement
from ldm_jax.sampling.request import SampleRequest
from ldm_jax.sampling.tasks import run
from tests.sampling.tiny_models import random_model, tiny_config


@pytest.fixture(scope="module")
def class_model():
    return random_model(tiny_config("paper/cin256_v2.py"), seed=3)


def test_replicated_weights_sample_the_same_images(class_model):
    request = SampleRequest(class_label=1, num=8, steps=3, guidance=2.0, seed=5)
    one = run(class_model, request)
    spread = placement.replicate(class_model)
    mesh = placement.mesh_of(spread.ldm_params)
    assert mesh is not None and mesh.size == jax.local_device_count() == 8
    many = run(spread, request)
    np.testing.assert_allclose(many.images, one.images, atol=2e-5)
    assert many.info == one.info


def test_split_batch_splits_only_batch_sized_arrays():
    mesh = placement.mesh_of(
        placement.replicate(random_model(tiny_config("paper/cin256_v2.py"))).ldm_params
    )
    tree = {"cond": np.zeros((8, 3), np.int32), "uncond": np.zeros((1, 3)), "scale": np.float32(2)}
    placed = placement.split_batch(tree, 8, mesh)
    assert isinstance(placed["cond"].sharding, NamedSharding)
    assert placed["cond"].sharding.spec == PartitionSpec(placement.DATA_AXIS)
    assert len(placed["cond"].addressable_shards) == 8
    assert placed["cond"].addressable_shards[0].data.shape == (1, 3)
    assert placed["uncond"].sharding.is_fully_replicated
    assert placement.split_batch(tree, 6, mesh) is tree  # 6 rows do not split over 8 devices
    assert placement.split_batch(tree, 8, None) is tree
    assert placement.mesh_of({"w": np.zeros(2)}) is None
