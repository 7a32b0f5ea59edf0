"""`evaluate --what generative` on a tiny random class-conditional workdir: metric values against
the features computed here, protocol records and their differences, the reference-feature
cache, the missing-Inception-weights error before any sampling, the CLI, and two processes
making the same shards as one (slow)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from ldm_jax.config.validation import ConfigError
from ldm_jax.data import datasets, pipeline
from ldm_jax.evaluation import classifier as clf
from ldm_jax.evaluation import feature_extractors as fx
from ldm_jax.evaluation import fid_protocol
from ldm_jax.evaluation import generative as gen
from ldm_jax.evaluation import metrics as base_metrics
from ldm_jax.evaluation import precision_recall as pr
from ldm_jax.evaluation import sample_shards as ss
from ldm_jax.sampling.images import to_uint8
from tests.cli_runner import FAST_XLA, ROOT, run_cli
from tests.sampling import tiny_models as tm

SAMPLING = dict(sampler="ddim", steps=2, eta=None, guidance=None, seed=3, batch_size=8)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tfds_dir):
    """A written tiny quickstart workdir (random weights) that names the prepared Fashion-MNIST."""
    return tm.fashion_mnist_workdir(str(tmp_path_factory.mktemp("gen") / "wd"), tfds_dir)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("classifier"))
    params = clf.init_params(clf.FashionClassifier(), seed=1)  # random: the plumbing is checked
    clf.save_classifier(directory, params, {"test_accuracy": 0.1})
    return directory


class Counting(fx.Extractor):
    """A deterministic stand-in extractor that counts the images it is given."""

    def __init__(self, fn, describe):
        super().__init__(fn, describe)
        self.seen = 0

    def __call__(self, images):
        self.seen += len(images)
        return super().__call__(images)


def _blocks(images: np.ndarray, side: int) -> np.ndarray:
    """Mean of each (H/side)x(W/side) block of grey images: [N, side * side] float32."""
    x = np.asarray(images, np.float32)[..., 0]
    n, h, w = x.shape
    return x.reshape(n, side, h // side, side, w // side).mean(axis=(2, 4)).reshape(n, -1)


def fake_lpips() -> Counting:
    return Counting(lambda x: {"lpips_vgg16_pooled": _blocks(x, 4)}, {"features": "blocks4"})


def fake_inception() -> Counting:
    def fn(x):
        return {
            "inception_pool3": _blocks(x, 4),
            "inception_spatial": _blocks(x, 8),
            "inception_logits": _blocks(x, 2) / 32.0,
        }

    return Counting(fn, {"features": "fake inception", "resize": fx.RESIZES["clean"]})


def test_resize_names_are_the_fid_protocols():
    assert tuple(fx.RESIZES) == fid_protocol.MODES


def test_protocol_difference_names_each_differing_field():
    a = {
        "value": 1.0,
        "protocol": {"num_samples": 50000, "reference": {"split": "test", "num": 10}},
    }
    b = {
        "value": 2.0,
        "protocol": {"num_samples": 1000, "reference": {"split": "train", "num": 10}},
    }
    assert gen.protocol_difference(a, b) == [
        "num_samples: 50000 != 1000",
        "reference.split: 'test' != 'train'",
    ]
    assert gen.protocol_difference(a, a) == []
    c = {"protocol": {**a["protocol"], "resize": "clean"}}
    assert gen.protocol_difference(a, c) == ["resize: '<absent>' != 'clean'"]


def test_missing_inception_weights_fail_in_one_line_before_sampling(workdir, monkeypatch):
    monkeypatch.delenv(gen.INCEPTION_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as err:
        gen.evaluate_generative(workdir, metrics=["fd_lpips", "fid"], num_samples=8, **SAMPLING)
    message = str(err.value)
    assert "\n" not in message and "--inception_weights PATH" in message
    assert gen.INCEPTION_ENV in message and "pt_inception-2015-12-05" in message
    monkeypatch.setenv(gen.INCEPTION_ENV, os.path.join(workdir, "nope.pth"))
    with pytest.raises(FileNotFoundError, match="nope.pth does not exist"):
        gen.evaluate_generative(workdir, metrics=["is"], num_samples=8, **SAMPLING)
    assert not os.path.exists(os.path.join(workdir, "eval_samples"))  # nothing was sampled


def test_unknown_and_inapplicable_metrics_are_refused(workdir):
    with pytest.raises(ConfigError, match=r"unknown \['fd'\]"):
        gen.evaluate_generative(workdir, metrics=["fd"], num_samples=8, **SAMPLING)
    emoji = tm.tiny_config("autoencoders/emoji/identity_ldm1.py")
    assert gen.applicable_metrics(emoji) == ("fd_lpips", "precision_recall")
    with pytest.raises(ConfigError, match="accuracy judge 32x32 Fashion-MNIST"):
        gen.check_metrics(["accuracy"], emoji)


def test_metrics_match_the_features_and_the_cache_is_reused(workdir, classifier_dir, tmp_path):
    lpips, inception = fake_lpips(), fake_inception()
    kwargs = dict(
        metrics=list(gen.METRICS), num_samples=20, num_reference=30, classifier_dir=classifier_dir,
        samples_dir=str(tmp_path / "samples"), devices=jax.local_devices()[:1],
        extractors={"lpips_vgg": lpips, "inception": inception}, **SAMPLING,
    )  # fmt: skip
    result = gen.evaluate_generative(workdir, **kwargs)
    images, labels, protocol = ss.load_samples(str(tmp_path / "samples"))
    source = datasets.get_data_source("fashion_mnist", "test", json.load(
        open(os.path.join(workdir, "config.json")))["data"]["data_dir"])  # fmt: skip
    reals = to_uint8(pipeline.load_split_arrays(source, 32, max_examples=30)[0])

    # Values from the features, computed here without the module's plumbing.
    params, _ = clf.get_or_train_classifier(classifier_dir)
    classify = base_metrics.make_classify_fn(clf.FashionClassifier(), params)
    fake_logits, fake_hidden = classify(images / 127.5 - 1.0)
    _, real_hidden = classify(reals / 127.5 - 1.0)
    m = result["metrics"]
    assert m["fd_classifier"]["value"] == pytest.approx(
        base_metrics.frechet_distance(fake_hidden, real_hidden), rel=1e-6
    )
    assert m["accuracy"]["value"] == pytest.approx(np.mean(fake_logits.argmax(-1) == labels))
    assert m["fd_lpips"]["value"] == pytest.approx(
        base_metrics.frechet_distance(_blocks(images, 4), _blocks(reals, 4)), rel=1e-6
    )
    want_pr = pr.precision_recall(_blocks(reals, 4), _blocks(images, 4))
    assert m["precision_recall"]["precision"] == want_pr["precision"]
    assert m["precision_recall"]["recall"] == want_pr["recall"]
    assert m["fid"]["value"] == pytest.approx(
        base_metrics.frechet_distance(_blocks(images, 4), _blocks(reals, 4)), rel=1e-6
    )
    assert m["sfid"]["value"] == pytest.approx(
        base_metrics.frechet_distance(_blocks(images, 8), _blocks(reals, 8)), rel=1e-6
    )
    want_is = fid_protocol.inception_score(_blocks(images, 2) / 32.0, splits=gen.IS_SPLITS)
    assert (m["is"]["value"], m["is"]["std"]) == pytest.approx(want_is)

    # Each metric states its protocol.
    p = m["fd_classifier"]["protocol"]
    assert (p["num_samples"], p["seed"], p["steps"], p["sampler"]) == (20, 3, 2, "ddim")
    assert p["reference"] == {
        "dataset": "fashion_mnist", "split": "test", "num": 30, "selection": "first",
        "seed": None, "image_size": 32,
    }  # fmt: skip
    assert p["resize"] == "none" and p["quantisation"] == ss.QUANTISATION
    assert m["accuracy"]["protocol"]["reference"] is None
    assert m["precision_recall"]["protocol"]["k"] == 3 and m["is"]["protocol"]["splits"] == 10
    assert m["fid"]["protocol"]["resize"] == fx.RESIZES["clean"]
    assert result["samples"] == protocol.to_json()
    assert lpips.seen == 20 + 30 and inception.seen == 20 + 30

    # A rerun reuses the samples and the cached reference features; another reference count
    # is another cache entry, and the two results say what differs.
    cached = sorted(os.listdir(os.path.join(workdir, gen.REFERENCE_DIR)))
    assert len(cached) == 3 and all("_fashion_mnist_test_30_" in n for n in cached)
    mtime = os.stat(ss.shard_path(str(tmp_path / "samples"), 0)).st_mtime_ns
    again = gen.evaluate_generative(workdir, **kwargs)
    assert lpips.seen == 20 + 30 + 20 and inception.seen == 20 + 30 + 20
    assert os.stat(ss.shard_path(str(tmp_path / "samples"), 0)).st_mtime_ns == mtime
    assert again["metrics"] == result["metrics"]
    other = gen.evaluate_generative(
        workdir, **{**kwargs, "metrics": ["fd_lpips"], "num_reference": 25}
    )
    assert lpips.seen == 70 + 20 + 25
    assert gen.protocol_difference(result["metrics"]["fd_lpips"], other["metrics"]["fd_lpips"]) == [
        "reference.num: 30 != 25"
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(workdir: str, classifier_dir: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "ldm_jax.evaluate", f"--workdir={workdir}", "--what=generative",
        "--num_samples=20", "--batch_size=8", "--steps=2", "--sampler=ddim", "--seed=3",
        f"--classifier_dir={classifier_dir}", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_cli_writes_json_with_protocols_and_refuses_missing_weights(workdir, classifier_dir):
    out = run_cli(*_cli(workdir, classifier_dir, "--metrics=accuracy,fd_classifier")[2:])
    printed = json.loads(out.strip().splitlines()[-1])
    with open(os.path.join(workdir, "eval_generative.json")) as f:
        assert json.load(f) == printed
    p = printed["metrics"]["fd_classifier"]["protocol"]
    assert p["num_samples"] == 20 and p["reference"]["num"] == 20 and p["seed"] == 3
    assert printed["samples_dir"].startswith(os.path.join(workdir, "eval_samples", "step0_ddim2"))

    env = {k: v for k, v in os.environ.items() if k != gen.INCEPTION_ENV}
    proc = subprocess.run(
        _cli(workdir, classifier_dir, "--metrics=fid", "--samples_dir=/nonexistent/x"),
        capture_output=True, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "--inception_weights PATH" in lines[0], proc.stderr[-2000:]


@pytest.mark.slow
def test_two_processes_make_the_same_shards_as_one(workdir, classifier_dir, tmp_path):
    two = str(tmp_path / "two")
    port = _free_port()
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "1", "JAX_PLATFORMS": "cpu", "XLA_FLAGS": FAST_XLA}
    procs = [
        subprocess.Popen(
            _cli(
                workdir,
                classifier_dir,
                "--metrics=accuracy",
                f"--samples_dir={two}",
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    # Process 0 alone prints (and writes) the result.
    assert '"samples_dir"' in outputs[0][0] and '"samples_dir"' not in outputs[1][0]

    one = str(tmp_path / "one")
    protocol = ss.load_manifest(two)
    trained = gen.load_trained_ldm(workdir)
    ss.generate_shards(trained, protocol, one, devices=jax.local_devices()[:1])
    a, b = ss.load_samples(one), ss.load_samples(two)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2] and protocol.num_shards == 3


def test_inception_seam_passes_mode_mesh_and_maps_the_features(monkeypatch, tmp_path):
    """`inception_extractor` on `inception_weights.load_fid_inception` (replaced by a recorder:
    the network itself is tested in test_inception_net)."""
    from ldm_jax.evaluation import inception_weights

    calls = {}

    def fake_load(path, mode, batch_size, mesh):
        calls.update(path=path, mode=mode, batch_size=batch_size, mesh=mesh)
        return lambda x: {
            "pool3": _blocks(x, 4), "spatial": _blocks(x, 8), "logits": _blocks(x, 2),
            "logits_unbiased": -_blocks(x, 2),
        }  # fmt: skip

    monkeypatch.setattr(inception_weights, "load_fid_inception", fake_load)
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"")
    monkeypatch.setenv(gen.INCEPTION_ENV, str(weights))
    extractor = fx.inception_extractor(None, "legacy_tensorflow", 8, jax.local_devices()[:4])
    assert (calls["path"], calls["mode"], calls["batch_size"]) == (
        str(weights),
        "legacy_tensorflow",
        8,
    )
    assert dict(calls["mesh"].shape) == {"data": 4, "fsdp": 1, "tensor": 1}
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 1), dtype=np.uint8)
    feats = extractor(images)
    np.testing.assert_array_equal(feats["inception_pool3"], _blocks(images, 4))
    np.testing.assert_array_equal(feats["inception_spatial"], _blocks(images, 8))
    np.testing.assert_array_equal(feats["inception_logits"], -_blocks(images, 2))  # no fc bias
    assert extractor.describe["resize"] == fx.RESIZES["legacy_tensorflow"]
    assert extractor.describe["weights"] == "pt_inception.pth"
    assert gen.INCEPTION_ENV == inception_weights.ENV_VAR
    with pytest.raises(ConfigError, match="--resize must be one of"):
        fx.inception_extractor(None, "legacy", 8)
