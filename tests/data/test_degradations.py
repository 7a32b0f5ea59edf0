"""Super-resolution degradations: bicubic is the plain antialiased resize; bsr_light is a
function of the key (same key, same draw), lands on the 8-bit grid at size H/f, and its
JPEG-like step loses what Pillow's JPEG encoder loses."""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ldm_jax.data import degradations


def _images(batch: int, side: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus texture, float32 [B, side, side, C] in [-1, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / (side - 1)
    base = np.stack([yy, xx, (yy + xx) / 2][:channels], axis=-1)
    out = base[None] + 0.1 * rng.standard_normal((batch, side, side, channels))
    return (np.clip(out, 0.0, 1.0) * 2.0 - 1.0).astype(np.float32)


def test_bicubic_is_the_antialiased_resize():
    x = jnp.asarray(_images(2, 32, 3))
    want = jax.image.resize(x, (2, 8, 8, 3), "bicubic", antialias=True)
    np.testing.assert_array_equal(np.asarray(degradations.bicubic(x, 4)), np.asarray(want))
    key = jax.random.PRNGKey(5)  # the key does not matter to bicubic
    np.testing.assert_array_equal(
        np.asarray(degradations.degrade(x, 4, "bicubic", key)), np.asarray(want)
    )
    with pytest.raises(ValueError, match="bsr_light"):
        degradations.degrade(x, 4, "bsr", key)


@pytest.mark.parametrize("f, channels", [(4, 3), (2, 1)])
def test_bsr_light_is_a_function_of_the_key(f, channels):
    x = jnp.asarray(np.repeat(_images(1, 32, channels), 4, axis=0))  # 4 copies of one image
    fn = jax.jit(lambda x, k: degradations.bsr_light(x, f, k))
    a = np.asarray(fn(x, jax.random.PRNGKey(0)))
    assert a.shape == (4, 32 // f, 32 // f, channels) and a.dtype == np.float32
    assert a.min() >= -1.0 and a.max() <= 1.0
    levels = (a + 1.0) / 2.0 * 255.0
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)  # 8-bit grid
    np.testing.assert_array_equal(a, np.asarray(fn(x, jax.random.PRNGKey(0))))
    assert np.abs(a - np.asarray(fn(x, jax.random.PRNGKey(1)))).max() > 2 / 255
    # Each image of the batch draws its own degradation.
    assert len({a[i].tobytes() for i in range(4)}) == 4
    # Still the image: closer to its bicubic version than to another image's.
    bicubic = np.asarray(degradations.bicubic(x, f))
    other = np.asarray(degradations.bicubic(x[:, ::-1], f))  # the image upside down
    assert np.abs(a - bicubic).mean() < 0.5 * np.abs(a - other).mean()


def test_blur_is_scipys_mirror_correlation_with_a_normalised_kernel():
    x = (_images(1, 32, 3)[0] + 1.0) / 2.0  # [32, 32, 3]
    blur = jax.jit(degradations._blur)
    for seed in range(3):
        kernel = degradations._blur_kernel(jax.random.PRNGKey(seed), 4)
        side = 2 * degradations.blur_radius(4) + 1
        assert kernel.shape == (side, side)
        assert abs(float(kernel.sum()) - 1.0) < 1e-5 and float(kernel.min()) >= 0.0
        k = np.asarray(kernel, np.float64)
        want = np.stack(
            [ndimage.correlate(x[..., c].astype(np.float64), k, mode="mirror") for c in range(3)],
            axis=-1,
        )
        np.testing.assert_allclose(np.asarray(blur(jnp.asarray(x), kernel)), want, atol=2e-6)


def _pil_jpeg(image01: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    pixels = np.round(image01 * 255).astype(np.uint8)
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(
        buf, "JPEG", quality=quality, subsampling=0
    )
    out = np.asarray(Image.open(buf), np.float32) / 255.0
    return out[..., None] if out.ndim == 2 else out


@pytest.mark.parametrize("channels", [3, 1])
def test_jpeg_like_loses_what_pillow_jpeg_loses(channels):
    x01 = (_images(1, 32, channels)[0] + 1.0) / 2.0
    x01 = np.round(x01 * 255) / 255  # what a PNG holds
    fn = jax.jit(degradations._jpeg_like)
    lossless = np.asarray(fn(jnp.asarray(x01), jnp.float32(100)))
    assert np.abs(lossless - x01).max() < 2.5 / 255  # all-ones tables: rounding only
    for quality in (90, 50):
        ours = np.asarray(fn(jnp.asarray(x01), jnp.float32(quality)))
        pil = _pil_jpeg(x01, quality)
        ours_err, pil_err = np.abs(ours - x01).mean(), np.abs(pil - x01).mean()
        print(
            f"C={channels} q={quality}: error ours {ours_err * 255:.2f}, Pillow "
            f"{pil_err * 255:.2f}, ours vs Pillow {np.abs(ours - pil).mean() * 255:.2f} /255"
        )
        assert 0.75 * pil_err < ours_err < 1.25 * pil_err
        assert np.abs(ours - pil).mean() < 0.5 * pil_err
