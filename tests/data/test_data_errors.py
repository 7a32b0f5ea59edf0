"""One-line data errors that name the problem and the fix: folders that cannot be used, splits
smaller than one batch, missing Debian data packages."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from ldm_jax.data import datasets, pipeline
from ldm_jax.data.errors import DataError

SIZE = 8


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def _folder(root, n: int):
    root.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (SIZE, SIZE), (i * 40, 0, 0)).save(root / f"{i}.png")
    return root


def _source(root, data_dir, split: str = "train"):
    return datasets.get_data_source(
        "image_folder", split, str(data_dir), path=str(root), image_size=SIZE
    )


def test_a_file_or_a_missing_folder_as_data_path(tmp_path):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (4, 4)).save(photo)
    with pytest.raises(DataError) as e:
        _source(photo, tmp_path / "tfds")
    assert _one_line(e) == (
        f"data.path {photo} is a file, not a folder: point data.path at the folder that holds "
        f"the images (e.g. --config.data.path={tmp_path})."
    )
    with pytest.raises(FileNotFoundError) as e:
        _source(tmp_path / "nowhere", tmp_path / "tfds")
    assert f"Image folder {tmp_path / 'nowhere'} does not exist" in _one_line(e)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("no images here")
    with pytest.raises(DataError) as e:
        _source(notes, tmp_path / "tfds")
    assert _one_line(e).startswith(f"Image folder {notes} holds no image files: put images (png")


@pytest.mark.parametrize("locked", ["", "cats"])
def test_a_folder_that_cannot_be_listed(tmp_path, monkeypatch, locked):
    root = _folder(tmp_path / "pets", 0)
    _folder(root / "cats", 2)
    _folder(root / "dogs", 2)
    denied = os.path.join(str(root), locked) if locked else str(root)
    real_scandir = os.scandir

    def scandir(path="."):
        if os.path.normpath(str(path)) == os.path.normpath(denied):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)  # What chmod 000 does for a user, not root.
    with pytest.raises(DataError) as e:
        _source(root, tmp_path / "tfds")
    assert _one_line(e).startswith(f"Cannot list the image folder {denied} (Permission denied)")
    assert f"chmod -R u+rX {denied}" in str(e.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists folders whatever their mode")
def test_a_folder_without_permissions(tmp_path):
    root = _folder(tmp_path / "locked", 2)
    os.chmod(root, 0)
    try:
        with pytest.raises(DataError, match="Cannot list the image folder .*chmod -R u\\+rX"):
            _source(root, tmp_path / "tfds")
    finally:
        os.chmod(root, 0o755)


def test_an_unreadable_metadata_file_and_an_unknown_split(tmp_path):
    root = _folder(tmp_path / "captioned", 2)
    (root / "metadata.jsonl").write_bytes(b'{"file_name": "0.png", "caption": "\xff\xfe"}\n')
    with pytest.raises(DataError) as e:
        _source(root, tmp_path / "tfds")
    assert "metadata.jsonl" in _one_line(e) and "readable UTF-8 text file" in str(e.value)
    (root / "metadata.jsonl").write_text('{"file_name": "9.png", "caption": "not here"}\n')
    with pytest.raises(DataError, match=r"metadata.jsonl names none of the images: give each"):
        _source(root, tmp_path / "tfds")
    (root / "metadata.jsonl").write_text('{"caption": "no file name"}\n')
    with pytest.raises(DataError, match=r"metadata.jsonl:1: each line must be a JSON object"):
        _source(root, tmp_path / "tfds")
    os.remove(root / "metadata.jsonl")
    with pytest.raises(DataError, match=r"Invalid split 'validation' .*\['train'\]"):
        _source(root, tmp_path / "tfds", "validation")


@pytest.mark.parametrize(
    "split, broken, usable", [("train", 0, 3), ("train[:2]", 0, 2), ("train", 2, 3)]
)
def test_a_split_smaller_than_one_batch(tmp_path, split, broken, usable):
    root = _folder(tmp_path / "few", 3)
    for i in range(broken):
        (root / f"broken_{i}.png").write_bytes(b"")
    source = _source(root, tmp_path / "tfds", split)
    assert len(source) == usable
    with pytest.raises(DataError) as e:
        pipeline.make_train_loader(source, batch_size=4, image_size=SIZE, seed=0)
    assert _one_line(e).startswith(
        f"The dataset holds {usable} examples, fewer than the batch size 4 (one global batch): "
        f"lower the batch size (--config.train.batch_size or "
        f"--config.autoencoder_train.batch_size) to at most {usable}, or train on more data"
    )
    loader = pipeline.make_train_loader(source, batch_size=usable, image_size=SIZE, seed=0)
    assert next(loader)["image"].shape == (usable, SIZE, SIZE, 3)


def test_an_empty_slice(tmp_path, tfds_dir):
    root = _folder(tmp_path / "few", 2)
    with pytest.raises(DataError) as e:
        _source(root, tmp_path / "tfds", "train[:0]")
    assert _one_line(e) == (
        f"Split 'train[:0]' of dataset '{root}' holds no examples (train: 2 examples): use a "
        "slice that keeps some (e.g. 'train[:90%]')."
    )
    with pytest.raises(DataError, match=r"'test\[10000:\]' of dataset 'fashion_mnist' holds no"):
        datasets.get_data_source("fashion_mnist", "test[10000:]", tfds_dir)
    empty = datasets.get_data_source("synthetic_shapes", "train[:0]")  # Generated: no tfds.
    assert len(empty) == 0
    with pytest.raises(DataError, match="The dataset split holds no examples") as e:
        pipeline.load_split_dict(empty, SIZE)
    _one_line(e)
    with pytest.raises(DataError, match="holds 0 examples"):
        pipeline.make_train_loader(empty, batch_size=1, image_size=SIZE, seed=0)


@pytest.mark.parametrize(
    "name, env, package",
    [
        ("fashion_mnist", "LDM_JAX_FASHION_MNIST_DIR", "dataset-fashion-mnist"),
        ("fashion_mnist_layout", "LDM_JAX_FASHION_MNIST_DIR", "dataset-fashion-mnist"),
        ("noto_emoji", "LDM_JAX_NOTO_EMOJI_FONT", "fonts-noto-color-emoji"),
        ("noto_emoji_segmentation/32px", "LDM_JAX_NOTO_EMOJI_FONT", "fonts-noto-color-emoji"),
    ],
)
def test_a_missing_debian_package_names_the_install_command(
    tmp_path, monkeypatch, name, env, package
):
    empty = tmp_path / "not_installed"
    empty.mkdir()
    target = empty if env.endswith("_DIR") else empty / "NotoColorEmoji.ttf"
    monkeypatch.setenv(env, str(target))
    with pytest.raises(FileNotFoundError) as e:
        source = datasets.get_data_source(name, "train", str(tmp_path / "tfds"))
        source[0]  # Generated sources read the package on first access.
    assert f"apt-get install -y {package}" in _one_line(e)
    assert str(target) in str(e.value)


def test_a_corrupt_debian_file_names_the_reinstall_command(tmp_path, monkeypatch):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).write_bytes(b"\x1f\x8b\x08\x00 cut short")
    monkeypatch.setenv("LDM_JAX_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DataError) as e:
        datasets.get_data_source("fashion_mnist", "test", str(tmp_path / "tfds"))
    assert "apt-get install --reinstall dataset-fashion-mnist" in _one_line(e)


def test_a_corrupt_emoji_font_names_the_reinstall_command(tmp_path, monkeypatch):
    # Not named NotoColorEmoji.ttf: Pillow would then fall back to the system font by name.
    font = tmp_path / "broken_emoji.ttf"
    font.write_bytes(b"\x00\x01\x00\x00 not a font")
    monkeypatch.setenv("LDM_JAX_NOTO_EMOJI_FONT", str(font))
    with pytest.raises(DataError) as e:
        datasets.get_data_source("noto_emoji", "train", str(tmp_path / "tfds"))
    assert "apt-get install --reinstall fonts-noto-color-emoji" in _one_line(e)
