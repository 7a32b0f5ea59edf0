"""The editing metric: target classes, the per-strength means, the flag checks (fast), and
`evaluate_workdir` on a tiny random class-conditional workdir with the img2img it shares with
`--task edit` (slow): strength 1 is plain class-conditional sampling with the same noise, and
one denoising step from the grid's last timestep returns nearly the reconstruction D(E(x))."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.config import builders
from ldm_jax.config.files import load_config_file
from ldm_jax.config.model_config import model_config
from ldm_jax.config.validation import ConfigError
from ldm_jax.data import pipeline
from ldm_jax.evaluation import classifier as clf
from ldm_jax.evaluation import editing as ed
from ldm_jax.evaluation.conditioned_samples import sample_per_condition
from ldm_jax.workdir.writer import write_workdir
from tests.sampling import tiny_models as tm


def test_targets_are_never_the_source_deterministic_and_cover_the_other_classes():
    labels = np.repeat(np.arange(10), 900)  # [9000]
    targets = ed.target_classes(labels, 10, seed=3)
    assert targets.dtype == np.int32 and targets.shape == labels.shape
    assert (targets != labels).all() and ((targets >= 0) & (targets < 10)).all()
    np.testing.assert_array_equal(targets, ed.target_classes(labels, 10, seed=3))
    assert (targets != ed.target_classes(labels, 10, seed=4)).any()
    for c in range(10):  # uniform over the nine other classes: 100 expected each, sd ~9.4
        counts = np.bincount(targets[labels == c], minlength=10)
        assert counts[c] == 0 and (np.abs(np.delete(counts, c) - 100) < 50).all()
    two = ed.target_classes(np.array([0, 1, 1, 0]), 2, seed=0)
    np.testing.assert_array_equal(two, [1, 0, 0, 1])  # with two classes, the other one


def test_rmse_and_row_means_on_known_arrays():
    a = np.zeros((3, 2, 2, 1), np.float32)
    b = a.copy()
    b[0] = 0.5  # every pixel off by 0.5
    b[1, 0, 0, 0] = 2.0  # one pixel of four off by 2: sqrt(4 / 4)
    np.testing.assert_allclose(ed.pixel_rmse(a, b), [0.5, 1.0, 0.0])
    row = ed.edit_scores(
        lpips_vgg=np.array([0.1, 0.3, 0.2, 0.0]),
        rmse=np.array([1.0, 0.0, 0.5, 0.5]),
        predicted=np.array([1, 2, 3, 4]),
        sources=np.array([1, 0, 0, 4]),
        targets=np.array([0, 2, 0, 0]),
    )
    assert row == pytest.approx(
        {"lpips_vgg": 0.15, "rmse": 0.5, "target_accuracy": 0.25, "source_fraction": 0.5}
    )


@pytest.mark.parametrize(
    "strengths, match",
    [
        ((), "empty"),
        ((0.5, 0.0), r"in \(0, 1\], got 0.0"),
        ((1.5,), r"in \(0, 1\], got 1.5"),
        ((0.2,), "0.2 with --steps 2 runs no denoising step.*at least 0.5"),
        ((0.5, 0.5), "twice"),
    ],
)
def test_bad_strengths_are_one_line_config_errors(strengths, match):
    with pytest.raises(ConfigError, match=match):
        ed.check_strengths(strengths, steps=2)


def test_strengths_and_models_that_pass():
    assert ed.check_strengths([0.5, 1], steps=2) == (0.5, 1.0)
    assert ed.check_editable(tm.tiny_config("quickstart.py")) == 10
    text = load_config_file(os.path.join(tm.ROOT, "configs/tasks/emoji/text2img_bert.py"))
    with pytest.raises(ConfigError, match="class-conditional Fashion-MNIST.*'noto_emoji'"):
        ed.check_editable(text)


@pytest.fixture(scope="module")
def trained():
    return tm.random_model(tm.tiny_config("quickstart.py"))  # grey 32x32, 10 classes + null


@pytest.mark.slow
def test_evaluate_workdir_reports_the_curve_and_its_endpoints(trained, tmp_path):
    d = trained.config.diffusion
    schedule = dict(
        schedule=d.schedule,
        num_timesteps=d.num_timesteps,
        beta_start=d.beta_start,
        beta_end=d.beta_end,
        prediction_type=d.prediction_type,
    )
    workdir = str(tmp_path / "wd")
    write_workdir(
        workdir, model_config(trained.config), trained.ae_params, trained.ldm_params, 1.0,
        schedule, {},
    )  # fmt: skip
    config_file = os.path.join(workdir, "config.json")
    with open(config_file) as f:
        config = json.load(f)
    config["data"]["name"] = "fashion_mnist"  # an imported workdir names no dataset
    with open(config_file, "w") as f:
        json.dump(config, f)
    classifier_dir = str(tmp_path / "classifier")
    params = clf.init_params(clf.FashionClassifier(), seed=1)  # random: the protocol is checked
    clf.save_classifier(classifier_dir, params, {"test_accuracy": 0.1})
    result = ed.evaluate_workdir(
        workdir, num=4, seed=0, guidance=None, sampler=None, steps=2, eta=None, batch_size=3,
        strengths=(0.5, 1.0), classifier_dir=classifier_dir,
    )  # fmt: skip

    assert result["num_images"] == 4 and result["classifier_test_accuracy"] == 0.1
    p = result["protocol"]
    assert (p["seed"], p["steps"], p["sampler"], p["strengths"]) == (0, 2, "ddim", [0.5, 1.0])
    assert p["guidance"] == 3.0 and p["eta"] == 0.0  # the written workdir's sample defaults
    assert p["target_rule"] == ed.TARGET_RULE and p["batch_size"] == 3
    assert [r["strength"] for r in result["strengths"]] == [0.5, 1.0]
    assert [r["denoising_steps"] for r in result["strengths"]] == [1, 2]
    rows = [*result["strengths"], result["reconstruction"], result["samples"]]
    for row in rows:
        assert set(row) >= {"lpips_vgg", "rmse", "target_accuracy", "source_fraction"}
        assert row["lpips_vgg"] > 0 and row["rmse"] > 0
        for key in ("target_accuracy", "source_fraction"):  # fractions of 4 images
            assert row[key] * 4 == pytest.approx(round(row[key] * 4))
        assert row["target_accuracy"] + row["source_fraction"] <= 1.0  # targets != sources
    assert result["samples"] == {k: result["strengths"][1][k] for k in result["samples"]}

    # The inputs endpoint against the classifier applied here to the same test images.
    source = builders.build_data_source(trained.config, "test")
    images, labels = pipeline.load_split_arrays(source, 32, max_examples=4)
    logits = clf.FashionClassifier().apply({"params": params}, jnp.asarray(images))  # [4, 10]
    predicted = np.argmax(logits, -1)
    targets = ed.target_classes(labels, 10, 0)
    assert result["inputs"] == {
        "lpips_vgg": 0.0,
        "rmse": 0.0,
        "target_accuracy": float(np.mean(predicted == targets)),
        "source_fraction": float(np.mean(predicted == labels)),
    }


@pytest.mark.slow
def test_strength_one_is_plain_sampling_and_one_last_step_is_nearly_the_reconstruction(trained):
    """With steps=2 the grid (leading spacing) is [501, 1]: strength 0.5 runs only the step from
    t=1, whose z0 is z + sqrt((1 - a_1) / a_1) (noise - eps), a_1 = 0.9985: nearly D(E(x))."""
    images = np.stack([tm.smooth_image(seed)[..., :1] for seed in range(4)])  # [4, 32, 32, 1]
    images = images.astype(np.float32) / 127.5 - 1.0
    targets = np.array([3, 0, 7, 3], np.int32)
    latents = ed.encode_latents(trained, images, batch_size=3)  # [4, 8, 8, 2]
    recon = ed.decode_scaled_latents(trained, latents, batch_size=3)
    kw = dict(sampler="ddim", steps=2, guidance=2.0, eta=1.0, seed=0, batch_size=3)
    full = ed.edit_images(trained, latents, targets, 1.0, **kw)
    plain = sample_per_condition(
        trained, targets, np.full((1,), 10, np.int32), sampler="ddim", steps=2, guidance=2.0,
        eta=1.0, seed=0, batch_size=3,
    )  # fmt: skip
    np.testing.assert_allclose(full, plain, atol=1e-6)
    last_step = ed.edit_images(trained, latents, targets, 0.5, **kw)
    near = ed.pixel_rmse(last_step, recon)  # [4]
    far = ed.pixel_rmse(full, recon)  # [4]
    assert (near < 0.5 * far).all(), (near, far)
    assert np.abs(last_step - recon).max() > 1e-4  # the step did run under the target class
