"""The super-resolution metric's parts against independent references: PSNR in closed form,
bicubic up-sampling against Pillow's float bicubic, nearest against the Kronecker product, the
low-res consistency PSNR, LPIPS on grey images, and the model check."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from PIL import Image

from ldm_jax.config.files import load_config_file
from ldm_jax.config.validation import ConfigError
from ldm_jax.data import degradations
from ldm_jax.evaluation import superres

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASKS = os.path.join(ROOT, "configs", "tasks", "fashion_mnist")
IDENTICAL_PSNR = 10 * math.log10(4 / 1e-12)  # the MSE floor of `autoencoder_loss.psnr`


def _pil_bicubic(low: np.ndarray, f: int) -> np.ndarray:
    """Pillow's float ("F") bicubic enlargement of every channel of every image [N, h, w, C]."""
    n, h, w, c = low.shape
    out = np.empty((n, h * f, w * f, c), np.float32)
    for i in range(n):
        for k in range(c):
            image = Image.fromarray(np.ascontiguousarray(low[i, :, :, k]), "F")
            out[i, :, :, k] = image.resize((w * f, h * f), Image.Resampling.BICUBIC)
    return np.clip(out, -1.0, 1.0)


def test_psnr_matches_the_closed_form_per_image_then_averaged():
    x = np.zeros((5, 16, 12, 1), np.float32)
    offsets = np.array([0.1, 0.2, 0.05, 0.5, 0.3], np.float32)
    y = x + offsets[:, None, None, None]  # MSE of image i: offsets[i]^2
    want = np.mean(10 * np.log10(4 / offsets.astype(np.float64) ** 2))
    # Batches of 2: the last batch of one image is padded and cut.
    got = superres.mean_scores(superres.make_score_fn(None), x, y, batch_size=2)
    assert got["psnr_db"] == pytest.approx(want, abs=1e-3)
    assert set(got) == {"psnr_db", "ssim"}
    small = superres.mean_scores(superres.make_score_fn(None), x[:, :8], y[:, :8], batch_size=2)
    assert set(small) == {"psnr_db"} and small["psnr_db"] == pytest.approx(want, abs=1e-3)


def test_identical_outputs_reach_the_psnr_ceiling_and_ssim_one():
    x = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16, 1)).astype(np.float32)
    got = superres.mean_scores(superres.make_score_fn(None), x, x.copy(), batch_size=3)
    assert got["psnr_db"] == pytest.approx(IDENTICAL_PSNR, abs=1e-3)
    assert got["ssim"] == pytest.approx(1.0, abs=1e-5)


def test_outputs_are_clipped_before_scoring():
    x = np.full((1, 16, 16, 1), 1.0, np.float32)
    got = superres.mean_scores(superres.make_score_fn(None), x, x + 0.5, batch_size=1)
    assert got["psnr_db"] == pytest.approx(IDENTICAL_PSNR, abs=1e-3)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="differ"):
        superres.mean_scores(
            superres.make_score_fn(None), np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 8, 3)), 1
        )


def test_bicubic_matches_pillow_and_is_exact_on_constants():
    rng = np.random.default_rng(1)
    low = rng.uniform(-0.9, 0.9, (2, 8, 12, 3)).astype(np.float32)
    up = superres.upsample_bicubic(low, 4)
    assert up.shape == (2, 32, 48, 3)
    np.testing.assert_allclose(up, _pil_bicubic(low, 4), atol=1e-5)
    constant = np.full((1, 8, 8, 1), 0.3, np.float32)
    np.testing.assert_allclose(superres.upsample_bicubic(constant, 4), 0.3, atol=1e-6)


def test_nearest_is_the_kronecker_product_with_ones():
    low = np.random.default_rng(2).uniform(-1, 1, (1, 3, 5, 1)).astype(np.float32)
    want = np.kron(low[0, :, :, 0], np.ones((4, 4), np.float32))
    np.testing.assert_array_equal(superres.upsample_nearest(low, 4)[0, :, :, 0], want)


def test_low_res_psnr_of_a_consistent_and_a_shifted_input():
    images = np.random.default_rng(3).uniform(-0.5, 0.5, (2, 32, 32, 1)).astype(np.float32)
    low = np.asarray(degradations.bicubic(images, 4))  # [2, 8, 8, 1]
    assert superres.low_res_psnr(images, low, 4) == pytest.approx(IDENTICAL_PSNR, abs=1e-2)
    shifted = low + 0.1  # MSE 0.01 against the outputs' own down-sampling
    want = 10 * math.log10(4 / 0.01)
    assert superres.low_res_psnr(images, shifted, 4) == pytest.approx(want, abs=1e-2)


def test_lpips_on_grey_images_is_lpips_of_the_three_channel_copies():
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
    score = superres.make_score_fn(superres.lpips.load_lpips_params("vgg16"))
    grey = superres.mean_scores(score, np.concatenate([x, x]), np.concatenate([x, y]), 4)
    rgb = superres.mean_scores(
        score, np.repeat(np.concatenate([x, x]), 3, -1), np.repeat(np.concatenate([x, y]), 3, -1), 4
    )
    assert grey["lpips_vgg"] == pytest.approx(rgb["lpips_vgg"], abs=1e-5)
    # Half the pairs are identical (distance 0), half are noisy copies (distance > 0).
    assert 0.0 < grey["lpips_vgg"] < 1.0


def test_only_superres_models_are_scored():
    tiny = load_config_file(os.path.join(TASKS, "superres_x4.py"), "tiny")
    superres.check_superres(tiny)
    assert superres.degradation(tiny) == "bicubic"
    layout = load_config_file(os.path.join(TASKS, "layout2img.py"), "tiny")
    with pytest.raises(ConfigError, match="--what superres scores super-resolution models"):
        superres.check_superres(layout)
