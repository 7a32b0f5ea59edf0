"""The inpainting evaluation's pieces on constructed images: the hole-restricted PSNR against its
closed form, mean filling, pasting, and the protocol's masks (reproducible from the seed, the
training distribution)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ldm_jax.config.validation import ConfigError
from ldm_jax.data import masks
from ldm_jax.evaluation import inpainting as ip
from ldm_jax.workdir.reader import TrainedLDM
from tests.sampling import tiny_models as tm


def _box(n: int, size: int, top: int, left: int, side: int) -> np.ndarray:
    m = np.zeros((n, size, size, 1), np.float32)
    m[:, top : top + side, left : left + side] = 1.0
    return m


def test_hole_psnr_is_the_closed_form_and_ignores_known_pixels():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, (3, 8, 8, 2)).astype(np.float32)
    mask = np.zeros((3, 8, 8, 1), np.float32)
    mask[0, :2, :3] = 1.0  # 6 pixels
    mask[1, 4:, 4:] = 1.0  # 16 pixels
    # image 2: no hole
    errors = np.array([0.1, 0.25, 0.3], np.float32)
    y = x + errors[:, None, None, None] * mask  # off by e inside the hole only ...
    y += 0.7 * (1.0 - mask) * np.sign(rng.standard_normal(x.shape))  # ... and far off outside
    got = ip.hole_psnr(x, y, mask)
    np.testing.assert_allclose(got[:2], 10 * np.log10(4 / errors[:2] ** 2), rtol=1e-5)
    assert np.isnan(got[2])  # no hole: not scored (nanmean skips it)


def test_hole_psnr_mixes_errors_over_pixels_and_channels_before_the_log():
    x = np.zeros((1, 4, 4, 2), np.float32)
    mask = _box(1, 4, 0, 0, 2)  # 4 pixels x 2 channels = 8 values
    y = np.zeros_like(x)
    y[0, 0, 0, 0] = 0.8  # one value off by 0.8: MSE = 0.64 / 8
    np.testing.assert_allclose(ip.hole_psnr(x, y, mask), [10 * np.log10(4 / 0.08)], rtol=1e-6)
    np.testing.assert_allclose(ip.hole_psnr(x, x, mask), [10 * np.log10(4 / 1e-12)])


def test_mean_fill_is_exact_on_an_image_with_constant_known_pixels():
    x = np.full((2, 8, 8, 1), 0.3, np.float32)
    x[1] = -0.6
    mask = _box(2, 8, 2, 1, 4)
    x[:, 2:6, 1:5] = np.random.default_rng(1).uniform(-1, 1, (2, 4, 4, 1))  # hidden content
    filled = ip.mean_fill(x, mask)
    np.testing.assert_allclose(filled[0], 0.3, atol=1e-6)
    np.testing.assert_allclose(filled[1], -0.6, atol=1e-6)


def test_mean_fill_uses_each_channels_known_mean_and_keeps_known_pixels():
    x = np.zeros((1, 2, 2, 2), np.float32)
    x[0, :, :, 0] = [[0.2, 0.4], [0.9, 1.0]]  # known: 0.2, 0.4, 0.9 -> mean 0.5
    x[0, :, :, 1] = [[-0.3, -0.6], [0.0, -1.0]]  # known: -0.3, -0.6, 0.0 -> mean -0.3
    mask = np.zeros((1, 2, 2, 1), np.float32)
    mask[0, 1, 1] = 1.0
    filled = ip.mean_fill(x, mask)
    np.testing.assert_allclose(filled[0, 1, 1], [0.5, -0.3], atol=1e-6)
    keep = mask[0, :, :, 0] == 0
    np.testing.assert_array_equal(filled[0][keep], x[0][keep])
    np.testing.assert_array_equal(ip.mean_fill(x, np.ones_like(mask)), 0.0)  # nothing known


def test_paste_keeps_known_pixels_and_takes_the_hole():
    known, generated = np.full((1, 4, 4, 3), -1.0), np.full((1, 4, 4, 3), 1.0)
    mask = _box(1, 4, 1, 1, 2)
    out = ip.paste(known, generated, mask)
    np.testing.assert_array_equal(out[0, 1:3, 1:3], 1.0)
    assert out.sum() == 4 * 3 - 12 * 3


def test_masks_are_reproducible_from_the_seed_and_the_training_distribution():
    a = ip.evaluation_masks(3, 5, 32)
    assert a.shape == (5, 32, 32, 1) and a.dtype == np.float32
    assert set(np.unique(a)) <= {0.0, 1.0}
    np.testing.assert_array_equal(a, ip.evaluation_masks(3, 5, 32))
    np.testing.assert_array_equal(a, masks.large_masks(jax.random.PRNGKey(3), 5, 32))
    assert not np.array_equal(a, ip.evaluation_masks(4, 5, 32))
    holes = a.mean(axis=(1, 2, 3))
    assert np.all((holes > 0.1) & (holes < 0.9))  # large masks, never empty or full


def test_only_inpainting_models_are_scored_and_references_must_sample_unconditionally():
    ip.check_inpainting(tm.tiny_config("tasks/fashion_mnist/inpainting.py"))
    uncond = tm.tiny_config("tasks/fashion_mnist/unconditional.py")
    with pytest.raises(ConfigError, match="--what inpaint scores inpainting models"):
        ip.check_inpainting(uncond)
    reference = TrainedLDM(uncond, None, None, 1.0, 0, "runs/uncond")
    assert ip._unconditional_branch(reference, 2) is None
    ip.check_reference(reference, (32, 32, 3))  # the tiny variant: 3-channel synthetic shapes
    with pytest.raises(ConfigError, match="makes 32x32x3 images"):
        ip.check_reference(reference, (32, 32, 1))
    layout = TrainedLDM(tm.tiny_config("tasks/fashion_mnist/layout2img.py"), None, None, 1, 0, "L")
    with pytest.raises(ConfigError, match="conditioned on 'layout'"):
        ip._unconditional_branch(layout, 2)
