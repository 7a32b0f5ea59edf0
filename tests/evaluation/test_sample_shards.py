"""Evaluation samples in shards: quantisation, labels, resume after a kill, device-count
independence, protocol mismatches (the two-process run is in test_generative)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.config.validation import ConfigError
from ldm_jax.evaluation import sample_shards as ss
from tests.sampling import tiny_models as tm

SHARD = 8  # a multiple of the 8 fake devices


@pytest.fixture(scope="module")
def trained():
    return tm.random_model(tm.tiny_config("quickstart.py"))  # grey 32x32, 10 classes + null


def _protocol(trained, **overrides):
    kw = dict(sampler="ddim", steps=2, eta=None, guidance=None, seed=3, num_samples=20)
    kw.update(overrides)
    return ss.protocol_for(trained, shard_size=SHARD, **kw)


@pytest.fixture(scope="module")
def one_device(trained, tmp_path_factory):
    """The 20 samples (shards of 8, 8, 4) made on a single device."""
    out = str(tmp_path_factory.mktemp("one"))
    made = ss.generate_shards(trained, _protocol(trained), out, devices=jax.local_devices()[:1])
    assert made == {"made": 3, "kept": 0}
    return out


def test_quantisation_is_round_half_even_of_the_affine_map_and_clips():
    x = jnp.asarray([-1.5, -1.0, 0.0, 1 / 255, 1.0, 2.0, -1 + 1 / 127.5 * 0.5])
    want = np.clip(np.round((np.asarray(x, np.float64) + 1) * 127.5), 0, 255)
    np.testing.assert_array_equal(np.asarray(ss.quantise(x)), want.astype(np.uint8))
    assert ss.quantise(x).dtype == jnp.uint8
    assert list(np.asarray(ss.quantise(jnp.asarray([-1.0, 0.0, 1.0])))) == [0, 128, 255]


def test_labels_cycle_over_the_global_index_and_unconditional_is_minus_one(trained):
    p = _protocol(trained, num_samples=21)
    assert p.num_shards == 3 and [p.shard_rows(i) for i in range(3)] == [8, 8, 5]
    labels = np.concatenate([p.shard_labels(i)[: p.shard_rows(i)] for i in range(3)])
    np.testing.assert_array_equal(labels, np.arange(21) % 10)
    uncond = ss.SampleProtocol(**{**p.to_json(), "num_classes": 0, "image_shape": (32, 32, 1)})
    assert (uncond.shard_labels(1) == -1).all()


def test_samples_load_back_with_labels_and_manifest(trained, one_device):
    images, labels, protocol = ss.load_samples(one_device)
    assert images.shape == (20, 32, 32, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.arange(20) % 10)
    assert protocol == _protocol(trained)
    assert images.std() > 5  # a random model's samples are not one flat grey
    with open(os.path.join(one_device, ss.MANIFEST)) as f:
        manifest = json.load(f)
    assert (
        manifest["steps"] == 2 and manifest["seed"] == 3 and manifest["image_shape"] == [32, 32, 1]
    )
    # Shard 1 is the sampler's output for its own key fold_in(seed, 1), whatever made shard 0.
    with np.load(ss.shard_path(one_device, 1)) as f:
        assert int(f["shard"]) == 1 and int(f["seed"]) == 3
        np.testing.assert_array_equal(f["images"], images[8:16])


def test_eight_devices_make_the_same_samples_as_one(trained, one_device, tmp_path):
    out = str(tmp_path / "eight")
    ss.generate_shards(trained, _protocol(trained), out, devices=jax.local_devices()[:8])
    np.testing.assert_array_equal(ss.load_samples(out)[0], ss.load_samples(one_device)[0])


def test_resume_keeps_good_shards_byte_for_byte_and_remakes_lost_ones(
    trained, one_device, tmp_path
):
    out = str(tmp_path / "resume")
    os.makedirs(out)
    for name in os.listdir(one_device):
        with open(os.path.join(one_device, name), "rb") as src:
            data = src.read()
        with open(os.path.join(out, name), "wb") as dst:
            dst.write(data)
    before = {i: open(ss.shard_path(out, i), "rb").read() for i in range(3)}
    mtime0 = os.stat(ss.shard_path(out, 0)).st_mtime_ns
    os.remove(ss.shard_path(out, 1))  # killed before shard 1 was renamed into place
    with open(ss.shard_path(out, 2), "r+b") as f:
        f.truncate(len(before[2]) // 2)  # a torn copy
    assert ss.read_shard(ss.shard_path(out, 2), _protocol(trained), 2) is None
    with pytest.raises(FileNotFoundError, match="2 of 3 shards.*shard_00001.npz, shard_00002"):
        ss.load_samples(out)
    with pytest.raises(FileNotFoundError, match="1 of 3 shards.*shard_00001.npz"):
        next(ss.iter_samples(out))  # missing files are named before anything is read

    made = ss.generate_shards(trained, _protocol(trained), out, devices=jax.local_devices()[:1])
    assert made == {"made": 2, "kept": 1}
    assert os.stat(ss.shard_path(out, 0)).st_mtime_ns == mtime0
    assert open(ss.shard_path(out, 0), "rb").read() == before[0]
    np.testing.assert_array_equal(ss.load_samples(out)[0], ss.load_samples(one_device)[0])
    streamed = list(ss.iter_samples(out))
    assert [len(images) for images, _ in streamed] == [8, 8, 4]
    np.testing.assert_array_equal(np.concatenate([i for i, _ in streamed]), ss.load_samples(out)[0])
    assert not [n for n in os.listdir(out) if ".tmp" in n]  # temporary files renamed away


def test_another_protocol_in_the_same_folder_is_refused_naming_the_fields(trained, one_device):
    with pytest.raises(ConfigError, match=r"seed: 3 on disk, 4 now; steps: 2 on disk, 5 now"):
        ss.generate_shards(trained, _protocol(trained, seed=4, steps=5), one_device)
    assert ss.load_manifest(one_device) == _protocol(trained)  # never overwritten


def test_shard_size_must_divide_over_the_devices(trained, tmp_path):
    p = ss.protocol_for(
        trained, sampler="ddim", steps=2, eta=None, guidance=None, seed=0, num_samples=6,
        shard_size=6,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="--batch_size=6 .* multiple of the 8 local devices"):
        ss.generate_shards(trained, p, str(tmp_path), devices=jax.local_devices())


def test_text_models_are_refused(tmp_path):
    text = tm.text_model(str(tmp_path))
    with pytest.raises(ConfigError, match="conditioned on 'text'"):
        _protocol(text)
