"""The notebooks' inpainting masks and input PNGs, read back by the sample CLI's own readers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ldm_jax.colab import masks, show
from ldm_jax.sampling import image_inputs


def test_rectangle_includes_both_ends_of_each_range():
    mask = masks.rectangle(32, 24, x=(3, 5), y=(10, 10))
    assert mask.shape == (32, 24, 1) and mask.dtype == np.float32
    rows, columns = np.nonzero(mask[..., 0])
    assert sorted(set(columns)) == [3, 4, 5] and set(rows) == {10}
    assert mask.sum() == 3  # (5 - 3 + 1) * (10 - 10 + 1)
    assert masks.rectangle(4, 4, x=(0, 3), y=(0, 3)).sum() == 16  # the whole image


@pytest.mark.parametrize(
    "x, y, message",
    [((5, 3), (0, 1), r"x range \(5, 3\)"), ((0, 24), (0, 1), r"<= 23"), ((0, 1), (-1, 2), "y")],
)
def test_rectangle_rejects_reversed_or_outside_ranges(x, y, message):
    with pytest.raises(ValueError, match=message):
        masks.rectangle(32, 24, x=x, y=y)


def test_picture_is_resized_to_the_image_and_thresholded_by_area():
    picture = np.zeros((96, 96), np.uint8)
    picture[30:63, 9:40] = 255  # rows 10..20 of 32 fully white; column 13 only a third white
    mask = masks.from_picture(picture, 32, 32)
    expected = np.zeros((32, 32, 1), np.float32)
    expected[10:21, 3:13] = 1.0
    np.testing.assert_array_equal(mask, expected)


def test_picture_grey_levels_and_colours():
    picture = np.full((2, 2, 3), 255, np.uint8)
    picture[0, 0] = 127  # below 50 % grey: kept
    picture[0, 1] = 128  # at or above: filled in
    picture[1, 0] = (255, 0, 0)  # luma 76: kept
    mask = masks.from_picture(picture, 2, 2)[..., 0]
    np.testing.assert_array_equal(mask, [[0.0, 1.0], [0.0, 1.0]])
    rgba = np.concatenate([picture, np.full((2, 2, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(masks.from_picture(rgba, 2, 2)[..., 0], mask)
    grey_1 = np.full((4, 4, 1), 255, np.uint8)
    assert masks.from_picture(grey_1, 2, 2).sum() == 4


@pytest.mark.parametrize(
    "picture, message",
    [
        (np.full((8, 8, 2), 255, np.uint8), r"\[H, W, 1\|3\|4\], got shape \(8, 8, 2\)"),
        (np.full((8,), 255, np.uint8), "got shape"),
        (np.full((30, 40), 255, np.uint8), "the mask is 40x30 .* the image is 32x32"),
        (np.full((16, 16), 100, np.uint8), "no white pixel"),
    ],
)
def test_picture_errors_name_the_problem(picture, message):
    with pytest.raises(ValueError, match=message):
        masks.from_picture(picture, 32, 32)


def test_masked_fills_the_hole_and_as_image_shows_it_white():
    image = np.full((4, 4, 3), -1.0, np.float32)
    mask = masks.rectangle(4, 4, x=(1, 2), y=(0, 0))
    out = masks.masked(image, mask)
    assert out[0, 1:3].tolist() == [[0.0] * 3] * 2
    assert (out[1:] == -1.0).all() and out[0, 0].tolist() == [-1.0] * 3
    shown = masks.as_image(mask, 3)
    assert shown.shape == (4, 4, 3) and set(np.unique(shown)) == {-1.0, 1.0}
    np.testing.assert_array_equal(shown[..., :1] > 0, mask > 0)


def test_pngs_read_back_by_the_sample_tasks(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.uniform(-1.0, 1.0, (8, 12, 1)).astype(np.float32)
    mask = masks.rectangle(8, 12, x=(2, 9), y=(1, 4))
    image_path = masks.write_image(image, str(tmp_path / "in" / "x.png"))
    mask_path = masks.write_mask(mask, str(tmp_path / "in" / "m.png"))
    back = image_inputs.read_image(image_path, 1)
    np.testing.assert_allclose(back, image, atol=0.5 / 127.5 + 1e-6)  # 8-bit rounding
    np.testing.assert_array_equal(image_inputs.read_mask(mask_path), mask)
    rgb = masks.write_image(np.zeros((4, 4, 3), np.float32), str(tmp_path / "rgb.png"))
    assert image_inputs.read_image(rgb, 3).shape == (4, 4, 3)


def test_writers_reject_other_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"\[H, W, 1\|3\]"):
        masks.write_image(np.zeros((4, 4)), str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match=r"\[H, W, 1\]"):
        masks.write_mask(np.zeros((4, 4, 3)), str(tmp_path / "m.png"))


def test_upload_bytes_reads_both_ipywidgets_formats():
    v8 = ({"name": "a.png", "content": memoryview(b"first")}, {"name": "b.png", "content": b"m"})
    assert masks.upload_bytes(v8) == b"m"
    v7 = {"m.png": {"metadata": {"name": "m.png"}, "content": b"mask"}}
    assert masks.upload_bytes(v7) == b"mask"
    for empty in ((), {}, None):
        with pytest.raises(ValueError, match="no file uploaded"):
            masks.upload_bytes(empty)


def test_an_uploaded_png_becomes_the_mask_it_shows():
    picture = np.zeros((64, 64, 3), np.uint8)
    picture[16:48, 8:40] = 255  # rows 8..23, columns 4..19 of a 32x32 image
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    upload = ({"name": "m.png", "content": memoryview(buffer.getvalue())},)
    mask = masks.from_picture(show.decode_upload(masks.upload_bytes(upload)), 32, 32)
    expected = np.zeros((32, 32, 1), np.float32)
    expected[8:24, 4:20] = 1.0
    np.testing.assert_array_equal(mask, expected)
