"""Odd and broken image files: each converted to the configured channels or skipped and counted.

Every file is a real one written with Pillow (or by hand, for 16-bit colour PNG) in tmp_path;
expected pixels come from closed forms (65535 -> 255, alpha over white), not from the decoder.
"""

from __future__ import annotations

import logging
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from ldm_jax.data import datasets, image_files, image_folder
from ldm_jax.data.errors import DataError

SIZE = 8


def _read(path, channels: int = 3, size: int | None = None) -> np.ndarray:
    return image_files.read_image(str(path), channels, size)


def _reason(path) -> str:
    with pytest.raises(image_files.ImageDecodeError) as e:
        _read(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    return e.value.reason


def _png16_rgb(path, rgb: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (colour type 2, bit depth 16), written by hand."""
    h, w, _ = rgb.shape
    rows = b"".join(b"\0" + rgb[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)


def test_grey_palette_and_bilevel_become_rgb_and_grey(tmp_path):
    Image.fromarray(np.array([[0, 100, 255]], np.uint8), "L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(_read(tmp_path / "l.png")[0], [[0] * 3, [100] * 3, [255] * 3])
    np.testing.assert_array_equal(_read(tmp_path / "l.png", 1)[0, :, 0], [0, 100, 255])
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 150, 100] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(_read(tmp_path / "p.png")[0], [[10, 20, 30], [200, 150, 100]])
    Image.fromarray(np.array([[0, 1]], bool)).convert("1").save(tmp_path / "one.png")
    np.testing.assert_array_equal(_read(tmp_path / "one.png", 1)[0, :, 0], [0, 255])


def test_transparency_is_composited_over_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 128], [0, 0, 255, 0]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    # a * c + (1 - a) * 255 with a = 128 / 255: 255, 127.
    np.testing.assert_array_equal(
        _read(tmp_path / "rgba.png")[0], [[255, 0, 0], [255, 127, 127], [255, 255, 255]]
    )
    la = np.array([[[0, 255], [0, 128], [0, 0]]], np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(_read(tmp_path / "la.png", 1)[0, :, 0], [0, 127, 255])
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "pt.png", transparency=0)
    np.testing.assert_array_equal(_read(tmp_path / "pt.png")[0], [[255, 255, 255], [10, 20, 30]])


def test_16_bit_grey_and_colour_are_scaled_not_clipped(tmp_path):
    deep = np.array([[0, 257, 32896, 65535]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as im:
        assert im.mode == "I;16"
    np.testing.assert_array_equal(_read(tmp_path / "grey16.png", 1)[0, :, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(_read(tmp_path / "grey16.png")[0, 3], [255, 255, 255])
    rgb = np.array([[[65535, 0, 0x8000], [0x00FF, 0x0100, 0xFFFF]]], np.uint16)
    _png16_rgb(tmp_path / "rgb16.png", rgb)
    np.testing.assert_array_equal(_read(tmp_path / "rgb16.png")[0], [[255, 0, 128], [0, 1, 255]])


def test_32_bit_int_and_float_tiffs(tmp_path):
    Image.fromarray(np.array([[0, 257, 65535]], np.int32)).save(tmp_path / "i16.tif")
    Image.fromarray(np.array([[-5, 2**30, 2**31 - 1]], np.int32)).save(tmp_path / "i32.tif")
    with Image.open(tmp_path / "i32.tif") as im:
        assert im.mode == "I"
    np.testing.assert_array_equal(_read(tmp_path / "i16.tif", 1)[0, :, 0], [0, 1, 255])
    np.testing.assert_array_equal(_read(tmp_path / "i32.tif", 1)[0, :, 0], [0, 128, 255])
    unit = np.array([[0.0, 0.5, 1.0, np.nan]], np.float32)
    Image.fromarray(unit).save(tmp_path / "unit.tiff")
    Image.fromarray(np.array([[-3.0, 100.0, 300.0]], np.float32)).save(tmp_path / "f255.tif")
    with Image.open(tmp_path / "unit.tiff") as im:
        assert im.mode == "F"
    np.testing.assert_array_equal(_read(tmp_path / "unit.tiff", 1)[0, :, 0], [0, 128, 255, 0])
    np.testing.assert_array_equal(_read(tmp_path / "f255.tif", 1)[0, :, 0], [0, 100, 255])


def test_cmyk_jpeg_colours_survive(tmp_path):
    colours = np.array([[255, 0, 0], [0, 128, 0], [20, 40, 220], [250, 250, 250]], np.uint8)
    rgb = np.repeat(np.repeat(colours[None], 16, axis=0), 16, axis=1)  # [16, 64, 3] blocks
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
    got = _read(tmp_path / "cmyk.jpg")
    for i, colour in enumerate(colours):
        centre = got[8, i * 16 + 8].astype(int)
        assert np.abs(centre - colour).max() <= 6, (i, centre, colour)


def test_other_formats_and_first_frame_and_exif_orientation(tmp_path):
    rgb = np.zeros((6, 10, 3), np.uint8)
    rgb[:, :5] = (200, 30, 60)
    for ext in ("gif", "tif", "bmp", "webp", "tiff"):
        Image.fromarray(rgb).save(
            tmp_path / f"a.{ext}", **({"lossless": True} if ext == "webp" else {})
        )
        got = _read(tmp_path / f"a.{ext}")
        assert got.shape == (6, 10, 3) and np.abs(got.astype(int) - rgb).max() <= 2, ext
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(_read(tmp_path / "anim.gif")[0, 0], [255, 0, 0])
    tall = Image.fromarray(rgb)  # 10 wide, 6 high, stored sideways: orientation 6.
    exif = tall.getexif()
    exif[0x0112] = 6
    tall.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    assert _read(tmp_path / "rotated.jpg").shape == (10, 6, 3)
    # A file of another format (PCX) named .png is not read: only IMAGE_FORMATS are.
    Image.fromarray(rgb).save(tmp_path / "pcx.png", format="PCX")
    assert _reason(tmp_path / "pcx.png") == image_files.NOT_AN_IMAGE


def _good_png(path, h: int = 12, w: int = 12) -> None:
    y, x = np.mgrid[0:h, 0:w]
    Image.fromarray(np.stack([x * 20, y * 20, x + y], -1).astype(np.uint8)).save(path)


def test_broken_files_are_refused_with_their_reason(tmp_path, monkeypatch):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("a shopping list, not a photo")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(noise).save(tmp_path / "whole.jpg", quality=90)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    os.symlink(tmp_path / "nowhere.png", tmp_path / "dangling.png")
    assert _reason(tmp_path / "empty.png") == image_files.EMPTY
    assert _reason(tmp_path / "text.jpg") == image_files.NOT_AN_IMAGE
    assert _reason(tmp_path / "corrupt.png") == image_files.CORRUPT
    assert _reason(tmp_path / "cut.png") == image_files.TRUNCATED
    assert _reason(tmp_path / "cut.jpg") == image_files.TRUNCATED
    assert _reason(tmp_path / "dangling.png") == image_files.MISSING
    assert _reason(tmp_path / "gone.png") == image_files.MISSING
    real_open = Image.open

    def locked(path, *args, **kwargs):
        if str(path).endswith("whole.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(image_files.Image, "open", locked)
    assert _reason(tmp_path / "whole.png") == image_files.PERMISSION


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_file_without_read_permission_is_refused(tmp_path):
    _good_png(tmp_path / "locked.png")
    os.chmod(tmp_path / "locked.png", 0)
    assert _reason(tmp_path / "locked.png") == image_files.PERMISSION


def test_decompression_bombs_are_refused_and_large_images_read(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "bomb.png")  # 4096 > 2 * 1000
    Image.new("RGB", (40, 40), (9, 8, 7)).save(tmp_path / "big.png")  # 1600: Pillow warns
    assert _reason(tmp_path / "bomb.png") == image_files.TOO_LARGE
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # No DecompressionBombWarning escapes.
        got = _read(tmp_path / "big.png", 3, SIZE)
    assert got.shape == (SIZE, SIZE, 3) and (got == [9, 8, 7]).all()


def test_large_images_are_shrunk_before_conversion(tmp_path):
    y, x = np.mgrid[0:1024, 0:1536]
    smooth = np.stack([x // 6, y // 4, (x + y) // 10], -1).astype(np.uint8)  # [1024, 1536, 3]
    Image.fromarray(smooth).save(tmp_path / "large.jpg", quality=95)
    Image.fromarray(smooth).save(tmp_path / "large.png")
    # JPEG: min side 1024 >= 6 * 32, decoded at 1/8 scale (keeps >= 3 * 32): 192 x 128.
    assert image_files.open_image(str(tmp_path / "large.jpg"), 32).size == (192, 128)
    # PNG: decoded whole, then reduced by 1024 // 96 = 10: 154 x 103 (Pillow rounds up).
    assert image_files.open_image(str(tmp_path / "large.png"), 32).size == (154, 103)
    assert image_files.open_image(str(tmp_path / "large.png")).size == (1536, 1024)
    direct = np.asarray(Image.fromarray(smooth).resize((48, 32), Image.Resampling.BICUBIC))
    for name in ("large.jpg", "large.png"):
        got = _read(tmp_path / name, 3, 32)
        assert got.shape == (32, 48, 3)
        assert np.abs(got.astype(int) - direct).mean() < 2.0, name
    deep = np.full((600, 400), 65535, np.uint16)
    Image.fromarray(deep).save(tmp_path / "large16.png")
    assert (_read(tmp_path / "large16.png", 1, 16) == 255).all()


@pytest.fixture
def zoo(tmp_path):
    """An image folder of 5 usable odd images and 8 broken files, one of each kind."""
    root = tmp_path / "zoo"
    root.mkdir()
    Image.fromarray(np.array([[65535] * 12] * 12, np.uint16)).save(root / "g16.png")
    Image.new("RGBA", (12, 12), (0, 0, 0, 0)).save(root / "clear.png")
    Image.new("RGB", (12, 12), (255, 0, 0)).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(np.full((12, 12), 0.5, np.float32)).save(root / "float.tif")
    _good_png(root / "ok.png")
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("not an image")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n junk")
    noise = np.random.default_rng(1).integers(0, 256, (24, 24, 3), np.uint8)
    Image.fromarray(noise).save(root / "z_cut.png")
    data = (root / "z_cut.png").read_bytes()
    (root / "z_cut.png").write_bytes(data[: len(data) // 2])
    os.symlink(root / "absent.png", root / "dangling.png")
    Image.new("RGB", (64, 64)).save(root / "huge.png")
    Image.new("RGB", (12, 12)).save(root / "locked.png")
    _good_png(root / "vanishing.png")
    return root


def test_folder_skips_counts_and_logs_every_broken_kind(zoo, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # huge.png: 4096 pixels > 2 * 1000.
    real_open = Image.open

    def locked(path, *args, **kwargs):
        if str(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(image_files.Image, "open", locked)
    real_plan = image_folder.plan_folder

    def plan_then_delete(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        assert len(plan.files["train"]) == 13
        os.remove(zoo / "vanishing.png")  # Listed, then gone before it is read.
        return plan

    monkeypatch.setattr(image_folder, "plan_folder", plan_then_delete)
    with caplog.at_level(logging.WARNING):
        source = datasets.get_data_source(
            "image_folder", "train", str(tmp_path / "tfds"), path=str(zoo), image_size=SIZE
        )
    assert source.skip_reasons == {
        "corrupt.png": "corrupt",
        "dangling.png": "missing",
        "empty.png": "empty file",
        "huge.png": "too large",
        "locked.png": "permission denied",
        "text.jpg": "not an image",
        "vanishing.png": "missing",
        "z_cut.png": "truncated",
    }
    assert [e["file_name"] for e in source] == [
        "clear.png",
        "cmyk.jpg",
        "float.tif",
        "g16.png",
        "ok.png",
    ]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, warned
    assert warned[0].startswith(f"Skipped 8 of 13 image files of split 'train' in {zoo}: ")
    counts = "2 missing, 1 corrupt, 1 empty file, 1 not an image, 1 permission denied, 1 too large"
    assert counts + ", 1 truncated (e.g." in warned[0]
    assert (
        "(e.g. corrupt.png (corrupt), dangling.png (missing), empty.png (empty file), ...)"
        in warned[0]
    )
    images = {e["file_name"]: e["image"] for e in source}
    assert (images["g16.png"] == 255).all() and (images["clear.png"] == 255).all()
    assert (images["float.tif"] == 128).all()
    assert np.abs(images["cmyk.jpg"].astype(int) - [255, 0, 0]).max() <= 6


def test_a_reused_folder_still_reports_its_skipped_files(tmp_path, caplog):
    root = tmp_path / "few"
    root.mkdir()
    _good_png(root / "a.png")
    (root / "b.png").write_bytes(b"")
    data_dir = str(tmp_path / "tfds")
    kw = dict(path=str(root), image_size=SIZE)
    first = datasets.get_data_source("image_folder", "train", data_dir, **kw)
    prepared = sorted(os.listdir(tmp_path / "tfds" / "image_folder"))
    with caplog.at_level(logging.WARNING):
        again = datasets.get_data_source("image_folder", "train", data_dir, **kw)
    assert sorted(os.listdir(tmp_path / "tfds" / "image_folder")) == prepared  # Reused.
    assert first.skip_reasons == again.skip_reasons == {"b.png": "empty file"}
    assert len(again) == 1
    assert "Skipped 1 of 2 image files of split 'train'" in caplog.text


def test_a_folder_of_only_broken_files_is_a_one_line_error(tmp_path):
    root = tmp_path / "broken"
    root.mkdir()
    (root / "a.png").write_bytes(b"")
    (root / "b.jpg").write_text("no")
    (root / "c.png").write_bytes(b"")
    with pytest.raises(DataError) as e:
        datasets.get_data_source(
            "image_folder", "train", str(tmp_path / "tfds"), path=str(root), image_size=SIZE
        )
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"None of the 3 image files of split 'train' in {root} could be read")
    assert "2 empty file, 1 not an image (e.g. a.png (empty file), b.jpg (not an image)" in message
    assert "replace or remove the broken files" in message
