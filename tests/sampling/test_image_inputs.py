"""The sample CLI's --image/--mask readers: the image folder's decoding, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ldm_jax.sampling import image_inputs
from ldm_jax.sampling.image_inputs import ImageInputError


def _error(fn, *args) -> str:
    with pytest.raises(ImageInputError) as e:
        fn(*args)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_odd_modes_are_converted_like_the_image_folder(tmp_path):
    Image.fromarray(np.array([[0, 32896, 65535]], np.uint16)).save(tmp_path / "g16.png")
    # 16-bit: 0, 128, 255 on the 8-bit scale -> -1, 128 / 127.5 - 1, 1 (a clip would give 1, 1).
    np.testing.assert_allclose(
        image_inputs.read_image(str(tmp_path / "g16.png"), 1)[0, :, 0],
        [-1, 0.5 / 127.5, 1],
        atol=1e-6,
    )
    rgba = np.array([[[0, 0, 0, 0], [0, 0, 0, 255]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(
        image_inputs.read_image(str(tmp_path / "rgba.png"), 3)[0], [[1, 1, 1], [-1, -1, -1]]
    )
    Image.new("RGB", (16, 16), (255, 0, 0)).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    red = image_inputs.read_image(str(tmp_path / "c.jpg"), 3)[8, 8]
    np.testing.assert_allclose(red, [1, -1, -1], atol=0.05)
    palette = Image.new("P", (1, 1))
    palette.putpalette([51, 102, 255] + [0] * 765)
    palette.save(tmp_path / "p.gif")
    np.testing.assert_allclose(
        image_inputs.read_image(str(tmp_path / "p.gif"), 3)[0, 0],
        np.array([51, 102, 255]) / 127.5 - 1,
        atol=1e-6,
    )


def test_a_transparent_mask_pixel_keeps_and_a_16_bit_mask_is_scaled(tmp_path):
    la = np.array([[[255, 255], [255, 0], [0, 255]]], np.uint8)  # painted, transparent, black
    Image.fromarray(la, "LA").save(tmp_path / "mask.png")
    np.testing.assert_array_equal(
        image_inputs.read_mask(str(tmp_path / "mask.png"))[0, :, 0], [1, 0, 0]
    )
    Image.fromarray(np.array([[30000, 40000]], np.uint16)).save(tmp_path / "m16.png")
    # 30000 / 257 = 117 < 127.5 <= 156 = 40000 / 257 (a clip to 255 would give 1, 1).
    np.testing.assert_array_equal(
        image_inputs.read_mask(str(tmp_path / "m16.png"))[0, :, 0], [0, 1]
    )


def test_label_maps_of_16_bit_and_palette_files(tmp_path):
    Image.fromarray(np.array([[0, 3, 5]], np.uint16)).save(tmp_path / "l16.png")
    np.testing.assert_array_equal(
        image_inputs.read_label_map(str(tmp_path / "l16.png"), 6), [[0, 3, 5]]
    )
    message = _error(image_inputs.read_label_map, str(tmp_path / "l16.png"), 5)
    assert "label 5 is outside the model's 5 classes" in message
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    assert "single-channel label image" in _error(
        image_inputs.read_label_map, str(tmp_path / "rgb.png"), 5
    )


def test_broken_inputs_are_one_line_errors_naming_flag_file_and_reason(tmp_path, monkeypatch):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    noise = np.random.default_rng(0).integers(0, 256, (48, 48, 3), np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt.png").write_bytes(data[:40] + b"\0" * 200)
    cases = {
        "empty.png": "not a readable image (empty file: 0 bytes).",
        "notes.png": "not a readable image (not an image: not PNG, JPEG, WebP, BMP, GIF or TIFF).",
        "cut.png": "not a readable image (truncated: image file is truncated).",
        "corrupt.png": "not a readable image (corrupt: ",
    }
    for name, reason in cases.items():
        path = str(tmp_path / name)
        assert _error(image_inputs.read_image, path, 3).startswith(f"--image {path}: {reason}")
        assert _error(image_inputs.read_mask, path).startswith(f"--mask {path}: {reason}")
    assert (
        _error(image_inputs.read_image, str(tmp_path), 3)
        == f"--image {tmp_path}: a folder, not an image file."
    )
    missing = str(tmp_path / "missing.png")
    assert _error(image_inputs.read_image, missing, 3) == f"--image {missing}: no such file."
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    big = str(tmp_path / "whole.png")  # 2304 pixels > 2 * 100: a decompression bomb.
    assert _error(image_inputs.read_image, big, 3).startswith(
        f"--image {big}: not a readable image (too large: Image size (2304 pixels) exceeds limit"
    )
