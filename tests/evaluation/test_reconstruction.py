"""Reconstruction metrics (ldm_jax.evaluation.reconstruction): SSIM against scikit-image and closed
forms, PSNR/FD closed forms through a known "autoencoder", VQ codebook statistics, a workdir that
holds only a first stage, and the `python -m ldm_jax.evaluate --what reconstruction` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.metrics

from ldm_jax.config import builders
from ldm_jax.config.files import load_config_file
from ldm_jax.config.validation import ConfigError
from ldm_jax.evaluation import classifier as clf
from ldm_jax.evaluation import reconstruction as rec
from ldm_jax.models.vq_autoencoder import VQModel
from ldm_jax.training.checkpoint import Checkpointer
from ldm_jax.workdir import layout
from tests.losses import test_lpips

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "quickstart.py")
SHIFT = 0.1
_ssim = jax.jit(rec.ssim)


class _Shift(nn.Module):
    """A stand-in first stage whose reconstruction is x + SHIFT (a KL model's output tuple)."""

    @nn.compact
    def __call__(self, x):
        offset = self.param("offset", nn.initializers.constant(SHIFT), ())
        return x + offset, None


def _images(n: int, side: int = 16, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth random images in [-0.8, 0.8] (so x + SHIFT is not clipped)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-0.8, 0.8, (n, side // 4, side // 4, channels))
    return np.repeat(np.repeat(coarse, 4, 1), 4, 2).astype(np.float32)


def _random_params(module: nn.Module, *inputs) -> dict:
    """Random parameters of the right tree (cheaper than compiling `init`: an untrained model)."""
    abstract = jax.eval_shape(lambda: nn.unbox(module.init(jax.random.key(0), *inputs)))
    rng = np.random.default_rng(0)
    normal = lambda s: rng.normal(0.0, 0.1, s.shape).astype(s.dtype)
    return jax.tree_util.tree_map(normal, abstract["params"])


def _skimage_ssim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """scikit-image's SSIM per image, set up as Wang et al. (images in [-1, 1] mapped to [0, 1])."""
    return np.array(
        [
            skimage.metrics.structural_similarity(
                (a.astype(np.float64) + 1) / 2,
                (np.clip(b.astype(np.float64), -1, 1) + 1) / 2,
                data_range=1.0,
                channel_axis=-1,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
            for a, b in zip(x, y, strict=True)
        ]
    )


def test_ssim_matches_scikit_image():
    rng = np.random.default_rng(0)
    x = np.clip(rng.normal(0, 0.5, (3, 24, 20, 3)), -1, 1).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
    got = np.asarray(_ssim(jnp.asarray(x), jnp.asarray(y)))
    want = _skimage_ssim(x, y)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert 0.1 < min(want) < max(want) < 0.95  # A regime where a wrong window would show.


def test_ssim_closed_forms():
    x = _images(2)
    np.testing.assert_allclose(np.asarray(_ssim(x, x)), 1.0, atol=1e-6)
    # Constant images a, b (in [0, 1]): no variance, SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 0.2, 0.7
    const = lambda v: np.full((1, 16, 16, 1), 2 * v - 1, np.float32)
    c1 = 0.01**2
    want = (2 * a * b + c1) / (a * a + b * b + c1)
    np.testing.assert_allclose(np.asarray(_ssim(const(a), const(b))), want, rtol=1e-5)
    with pytest.raises(ValueError, match="H, W >= 11"):
        _ssim(np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 8, 1)))


def test_codebook_stats_closed_form():
    stats = rec.codebook_stats(np.array([3, 1, 0, 0]))
    assert stats["codebook_size"] == 4 and stats["codebook_usage"] == 0.5
    p = np.array([0.75, 0.25])
    np.testing.assert_allclose(stats["codebook_perplexity"], np.exp(-np.sum(p * np.log(p))))
    np.testing.assert_allclose(rec.codebook_stats(np.ones(8))["codebook_perplexity"], 8.0)


def test_known_shift_gives_closed_form_psnr_and_fd():
    """x~ = x + 0.1: PSNR 10 log10(4 / 0.01), FD in pixel features = D * 0.1^2; batches of 8, 8, 4
    (the last padded) give the means over exactly the 20 images."""
    model = _Shift()
    params = {"offset": jnp.float32(SHIFT)}
    x = _images(20)
    pixels = lambda images: np.asarray(images)[:, ::5, ::5, 0].reshape(len(images), -1)  # D = 16
    result = rec.evaluate_reconstruction(
        model, params, (x[i : i + 8] for i in range(0, 20, 8)), pixels, "pixels"
    )
    assert result["num_images"] == 20 and result["fd_features"] == "pixels"
    np.testing.assert_allclose(result["psnr_db"], 10 * np.log10(4 / SHIFT**2), rtol=1e-5)
    np.testing.assert_allclose(result["fd"], 16 * SHIFT**2, rtol=1e-4)
    np.testing.assert_allclose(result["ssim"], np.mean(_skimage_ssim(x, x + SHIFT)), atol=2e-5)
    raw = test_lpips.raw_checkpoint("vgg16")
    want_lpips = np.mean(test_lpips.torch_lpips(raw, "vgg16", x, x + SHIFT, grad=False)[0])
    np.testing.assert_allclose(result["lpips_vgg16"], want_lpips, rtol=1e-5)
    assert "codebook_usage" not in result
    json.dumps(result)


def test_vq_codebook_usage_of_a_tiny_model():
    ae = VQModel(
        ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, embed_dim=4, n_embed=16,
        resolution=16,
    )  # fmt: skip
    x = _images(6)
    params = _random_params(ae, x[:1])
    result = rec.evaluate_reconstruction(ae, params, [x[:4], x[4:]], lpips_net=None)
    indices = jax.jit(lambda p, x: ae.apply({"params": p}, x)[2])(params, x)  # [6, 8, 8]
    counts = np.bincount(np.asarray(indices).ravel(), minlength=16)
    assert result["codebook_usage"] == np.count_nonzero(counts) / 16
    p = counts[counts > 0] / counts.sum()
    np.testing.assert_allclose(result["codebook_perplexity"], np.exp(-np.sum(p * np.log(p))))
    assert set(result) == {
        "num_images", "psnr_db", "ssim", "codebook_size", "codebook_usage", "codebook_perplexity"
    }  # fmt: skip


def _autoencoder_only_workdir(path: str, data_dir: str) -> str:
    """A workdir as stage 1 of `quickstart.py:tiny` leaves it (with weights at init)."""
    config = load_config_file(CONFIG, "tiny")
    config.stage = "autoencoder"
    config.data.data_dir = data_dir
    ae = builders.build_autoencoder(config)
    params = _random_params(ae, jnp.zeros((1, 32, 32, 1)))
    os.makedirs(path)
    with open(layout.config_path(path), "w") as f:
        f.write(config.to_json())
    ckpt = Checkpointer(layout.checkpoint_dir(path, "autoencoder"), 1)
    ckpt.save(3, {"step": jnp.asarray(3, jnp.int32), "params": params}, {})
    ckpt.close()
    return path


def test_evaluate_workdir_with_only_a_first_stage(tmp_path, tfds_dir):
    workdir = _autoencoder_only_workdir(str(tmp_path / "ae"), tfds_dir)
    result = rec.evaluate_workdir(workdir, num=20, batch_size=8, features="none")
    assert result["num_images"] == 20 and result["split"] == "test" and "fd" not in result
    assert 0 < result["lpips_vgg16"] and -1 < result["ssim"] < 1 and result["psnr_db"] > 0


def test_feature_space_of_the_fd():
    config = load_config_file(CONFIG, "tiny")
    assert rec.choose_features(config, "auto") == "classifier"  # 32x32 grey Fashion-MNIST.
    config.data.image_size = 64
    assert rec.choose_features(config, "auto") == "lpips_vgg"
    config.data.update(name="noto_emoji", image_size=32, channels=3)
    assert rec.choose_features(config, "auto") == "lpips_vgg"
    assert rec.choose_features(config, "classifier") == "classifier"
    with pytest.raises(ValueError, match="features must be one of"):
        rec.choose_features(config, "inception")


def test_imported_workdir_names_the_missing_dataset(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"data": {"name": "imported"}}))
    with pytest.raises(ConfigError, match="names no dataset"):
        rec.evaluate_workdir(str(tmp_path))


@pytest.mark.slow
def test_cli_on_a_trained_autoencoder(tmp_path, tfds_dir):
    """Stage 1 of `quickstart.py:tiny` for 2 steps, then the reconstruction CLI on its workdir."""
    workdir = str(tmp_path / "run")
    env = {**os.environ, "TFDS_DATA_DIR": tfds_dir}
    run = lambda *args: subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    train = run(
        "ldm_jax.train",
        f"--config={CONFIG}:tiny",
        f"--workdir={workdir}",
        "--config.stage=autoencoder",
        "--config.autoencoder_train.steps=2",
    )
    assert train.returncode == 0, train.stderr[-3000:]
    classifier_dir = str(tmp_path / "classifier")
    clf.save_classifier(
        classifier_dir,
        _random_params(clf.FashionClassifier(), jnp.zeros((1, 32, 32, 1))),
        {"test_accuracy": 0.1},
    )
    evaluate = ["ldm_jax.evaluate", f"--workdir={workdir}", f"--classifier_dir={classifier_dir}"]
    out = run(*evaluate, "--what=reconstruction", "--num=48", "--batch_size=16")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    with open(os.path.join(workdir, "eval_reconstruction.json")) as f:
        assert json.load(f) == result
    assert result["num_images"] == 48 and result["fd_features"] == "classifier"
    assert {"psnr_db", "ssim", "lpips_vgg16", "fd"} <= set(result)
    # The default (--what samples) still scores LDM samples: this workdir has none yet.
    samples = run(*evaluate)
    assert samples.returncode != 0 and "checkpoints/ldm" in samples.stderr
