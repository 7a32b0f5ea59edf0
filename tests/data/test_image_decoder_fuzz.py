"""Fuzzing the image decoder (hypothesis, the suite's derandomized profile, 300 examples each).

Random bytes, and valid PNG/JPEG/GIF/TIFF/BMP/WebP files with bytes flipped or cut: the image
folder's reader returns a uint8 [H, W, C] array with min(H, W) == the size, or refuses the file
with an `ImageDecodeError` whose reason is one of `SKIP_REASONS`; the sample CLI's readers
return an array or raise `ImageInputError`. Any other exception, or a decode taking longer than
`_HANG_S`, fails the test. Pillow's pixel limit is lowered while fuzzing so that a flipped
header claiming 100 M pixels is refused instead of allocated (the limit itself is tested in
test_bad_images.py).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import signal
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ldm_jax.data import datasets, image_files
from ldm_jax.sampling import image_inputs

SIZE = 8
_HANG_S = 10
_MAX_PIXELS = 1 << 20
_EXAMPLES = 300  # A decode takes about 5 ms: about 3 s for both fuzz tests.


class _Hang(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` can swallow it."""


@contextlib.contextmanager
def _bounded():
    """A time limit per decode and a small Pillow pixel limit."""

    def on_alarm(signum, frame):
        raise _Hang(f"decoding took more than {_HANG_S} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, _MAX_PIXELS
    signal.alarm(_HANG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        Image.MAX_IMAGE_PIXELS = limit


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@functools.cache
def _valid_files() -> tuple[tuple[str, bytes], ...]:
    """(name, bytes) of small valid files in every format and several modes."""
    y, x = np.mgrid[0:20, 0:24]
    rgb = Image.fromarray(np.stack([x * 10, y * 12, (x * y) % 256], -1).astype(np.uint8))
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray((x * 10).astype(np.uint8)))
    grey16 = Image.fromarray((x * 2700 + y).astype(np.uint16))
    floats = Image.fromarray((x / 24.0).astype(np.float32))
    return (
        ("rgb.png", _encode(rgb, "PNG")),
        ("rgba.png", _encode(rgba, "PNG")),
        ("grey16.png", _encode(grey16, "PNG")),
        ("palette.png", _encode(rgb.convert("P"), "PNG")),
        ("rgb.jpg", _encode(rgb, "JPEG", quality=90)),
        ("progressive.jpg", _encode(rgb, "JPEG", progressive=True)),
        ("cmyk.jpg", _encode(rgb.convert("CMYK"), "JPEG")),
        ("palette.gif", _encode(rgb.convert("P"), "GIF")),
        ("rgb.tif", _encode(rgb, "TIFF")),
        ("deflate.tif", _encode(rgb, "TIFF", compression="tiff_deflate")),
        ("float.tif", _encode(floats, "TIFF")),
        ("rgb.bmp", _encode(rgb, "BMP")),
        ("rgba.webp", _encode(rgba, "WEBP", lossless=True)),
    )


@pytest.fixture(scope="module")
def fuzz_dir():
    with tempfile.TemporaryDirectory(prefix="ldm_jax_fuzz_") as directory:
        yield directory


def _check_readers(path: str) -> None:
    """Both readers either give a well-formed array or refuse the file with their own error."""
    with _bounded():
        for channels in (1, 3):
            try:
                array = image_files.read_image(path, channels, SIZE)
            except image_files.ImageDecodeError as e:
                assert e.reason in image_files.SKIP_REASONS and path in str(e)
            else:
                assert array.dtype == np.uint8 and array.ndim == 3
                assert array.shape[2] == channels and min(array.shape[:2]) == SIZE
        try:
            pixels = image_inputs.read_image(path, 3)
        except image_inputs.ImageInputError as e:
            assert path in str(e) and "\n" not in str(e)
        else:
            assert pixels.dtype == np.float32 and pixels.shape[2] == 3
            assert -1.0 <= pixels.min() and pixels.max() <= 1.0
        try:
            mask = image_inputs.read_mask(path)
        except image_inputs.ImageInputError:
            pass
        else:
            assert set(np.unique(mask)) <= {0.0, 1.0}
        try:
            labels = image_inputs.read_label_map(path, 256)
        except image_inputs.ImageInputError:
            pass
        else:
            assert labels.dtype == np.int32 and labels.ndim == 2


def _write(directory: str, name: str, data: bytes) -> str:
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_every_valid_seed_file_reads():
    """The seeds are valid (else the mutation test would fuzz only broken files)."""
    with tempfile.TemporaryDirectory() as directory:
        for name, data in _valid_files():
            array = image_files.read_image(_write(directory, name, data), 3, SIZE)
            assert array.shape == (SIZE, round(24 * SIZE / 20), 3), name


_SIGNATURES = (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"II*\x00", b"BM", b"RIFF")


@settings(max_examples=_EXAMPLES)
@given(prefix=st.sampled_from(_SIGNATURES), body=st.binary(max_size=1024))
def test_random_bytes(fuzz_dir, prefix, body):
    """Random bytes, some behind a real format's magic number."""
    _check_readers(_write(fuzz_dir, "random.png", prefix + body))


@settings(max_examples=_EXAMPLES)
@given(
    seed=st.integers(0, len(_valid_files()) - 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=12),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_valid_files_with_bytes_flipped_or_cut(fuzz_dir, seed, flips, cut):
    name, data = _valid_files()[seed]
    mutated = bytearray(data)
    for where, value in flips:
        mutated[min(len(mutated) - 1, int(where * len(mutated)))] = value
    if cut is not None:
        mutated = mutated[: int(cut * len(mutated))]
    _check_readers(_write(fuzz_dir, name, bytes(mutated)))


def test_a_folder_of_mutated_files_never_stops_preparation(tmp_path):
    """Every file of a folder of damaged copies is either an example or counted as skipped."""
    root = tmp_path / "damaged"
    root.mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i in range(3):
        for name, data in _valid_files():
            mutated = bytearray(data)
            for where in rng.integers(0, len(mutated), 4 * i):
                mutated[where] = rng.integers(0, 256)
            mutated = mutated[: len(mutated) - i * len(mutated) // 4]
            names.append(f"{i}_{name}")
            (root / names[-1]).write_bytes(bytes(mutated))
    with _bounded():
        source = datasets.get_data_source(
            "image_folder", "train", str(tmp_path / "tfds"), path=str(root), image_size=SIZE
        )
    kept = [e["file_name"] for e in source]
    assert sorted(kept + list(source.skipped)) == sorted(names)
    assert set(source.skip_reasons.values()) <= set(image_files.SKIP_REASONS)
    assert {n for n in names if n.startswith("0_")} <= set(kept)  # The intact copies are read.
    assert all(e["image"].shape[2] == 3 and min(e["image"].shape[:2]) == SIZE for e in source)
