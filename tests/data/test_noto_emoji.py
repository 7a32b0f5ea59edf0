"""The Noto Color Emoji dataset: enumeration, images, captions, split, tfds builder, loader.

Needs the Debian packages of `bash scripts/install_debian_deps.sh` (fonts-noto-color-emoji and
unicode-cldr-core), like the Fashion-MNIST tests need dataset-fashion-mnist.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from ldm_jax.data import datasets, noto_emoji_builder, noto_emoji_render, pipeline

SIZE = 32  # The config prepared once per session (64 px is checked on single renders).
# Code points whose split is pinned (computed once from `split_of`; a change reshuffles the data).
PINNED_TEST = (0x2728, 0x1F345, 0x1F404)
PINNED_TRAIN = (0x1F600, 0x2764, 0x1F534, 0x1F535)


@pytest.fixture(scope="module")
def emoji_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A data dir holding noto_emoji/32px, prepared once."""
    directory = str(tmp_path_factory.mktemp("noto"))
    datasets.get_builder(f"noto_emoji/{SIZE}px", directory)
    return directory


@pytest.fixture(scope="module")
def splits(emoji_dir: str) -> dict[str, list[dict]]:
    """Every example of both splits, read through the registry."""
    out = {}
    for split in ("train", "test"):
        source = datasets.get_data_source("noto_emoji", split, emoji_dir, image_size=SIZE)
        out[split] = source.__getitems__(range(len(source)))
    return out


def _cldr_line(codepoint: int, tts: bool) -> str:
    """The raw text of one CLDR annotation, read with a regex (independent of the parser)."""
    path = os.path.join(noto_emoji_render.cldr_dir(), "annotations", "en.xml")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    kind = ' type="tts"' if tts else ""
    match = re.search(f'<annotation cp="{chr(codepoint)}"{kind}>([^<]*)</annotation>', text)
    assert match, hex(codepoint)
    return match.group(1)


def test_counts_and_splits_partition_the_emoji(splits):
    train = [e["codepoint"] for e in splits["train"]]
    test = [e["codepoint"] for e in splits["test"]]
    assert len(train) + len(test) > 1000
    assert not set(train) & set(test)
    assert 0.05 < len(test) / (len(train) + len(test)) < 0.15
    assert train == sorted(train) and test == sorted(test)  # Records in code point order.
    assert {cp: s for s in ("train", "test") for cp in (e["codepoint"] for e in splits[s])} == {
        cp: noto_emoji_render.split_of(cp) for cp in train + test
    }
    assert set(PINNED_TEST) <= set(test) and set(PINNED_TRAIN) <= set(train)


def test_split_is_a_fixed_function_of_the_code_point():
    assert [noto_emoji_render.split_of(cp) for cp in PINNED_TEST] == ["test"] * 3
    assert [noto_emoji_render.split_of(cp) for cp in PINNED_TRAIN] == ["train"] * 4
    share = np.mean([noto_emoji_render.split_of(cp) == "test" for cp in range(0x1F300, 0x1FB00)])
    assert 0.08 < share < 0.12


def test_images_are_rgb_on_white(splits):
    images = np.stack([e["image"] for s in splits.values() for e in s])  # [N, S, S, 3]
    assert images.dtype == np.uint8 and images.shape[1:] == (SIZE, SIZE, 3)
    corners = images[:, [0, 0, -1, -1], [0, -1, 0, -1]]  # [N, 4, 3]
    assert np.mean(corners == 255) > 0.95
    assert np.median(corners) == 255
    assert images.min() == 0 and images.max() == 255
    assert (images.reshape(len(images), -1).min(axis=1) < 200).all()  # Every emoji shows.


def test_named_colours_are_drawn(splits):
    by_cp = {e["codepoint"]: e for s in splits.values() for e in s}
    middle = slice(SIZE // 2 - 2, SIZE // 2 + 2)
    for cp, channel in ((0x1F534, 0), (0x1F7E2, 1), (0x1F535, 2)):  # red, green, blue circles
        rgb = by_cp[cp]["image"][middle, middle].reshape(-1, 3).mean(axis=0)
        assert rgb.argmax() == channel, (hex(cp), rgb)
        assert rgb[channel] - np.delete(rgb, channel).max() > 40, (hex(cp), rgb)


def test_captions_hold_unicode_names_and_cldr_keywords(splits):
    examples = [e for s in splits.values() for e in s]
    by_cp = {e["codepoint"]: e for e in examples}
    assert by_cp[0x1F600]["name"] == "grinning face"
    assert by_cp[0x2764]["name"] == "heavy black heart"
    # CLDR: tts "grinning face" (= the name, dropped), keywords "face | grin | grinning face".
    assert _cldr_line(0x1F600, tts=False) == "face | grin | grinning face"
    assert by_cp[0x1F600]["caption"] == "grinning face, face, grin"
    assert _cldr_line(0x2764, tts=True) == "red heart"
    assert by_cp[0x2764]["keywords"] == "red heart, heart"
    assert by_cp[0x2764]["caption"] == "heavy black heart, red heart, heart"
    for e in examples:
        assert e["caption"].startswith(e["name"]) and e["name"], e
        assert e["caption"] == ", ".join(filter(None, (e["name"], e["keywords"])))
    assert np.mean([bool(e["keywords"]) for e in examples]) > 0.9


def test_without_cldr_captions_are_names(tmp_path, monkeypatch):
    monkeypatch.setenv("LDM_JAX_CLDR_DIR", str(tmp_path))
    assert noto_emoji_render.read_cldr_annotations() == {}
    text = noto_emoji_render.describe(0x1F600, {})
    assert (text.caption, text.keywords) == ("grinning face", ())
    assert noto_emoji_render.describe(0x1FAE8, {}) is None  # Unicode 15: no name in Python 3.11.


def test_square_rgb_composites_over_white_and_centres():
    rgba = np.zeros((2, 4, 4), np.uint8)  # [h=2, w=4, RGBA]
    rgba[0] = (255, 0, 0, 255)  # Opaque red row.
    rgba[1] = (0, 0, 255, 128)  # Half-transparent blue row.
    out = noto_emoji_render.to_square_rgb(rgba, 4)  # Same size: no resampling.
    white = np.full((4, 3), 255)
    np.testing.assert_array_equal(out[0], white)
    np.testing.assert_array_equal(out[3], white)
    np.testing.assert_array_equal(out[1], np.tile([255, 0, 0], (4, 1)))
    np.testing.assert_array_equal(out[2], np.tile([127, 127, 255], (4, 1)))  # 255 * 127/255.


def test_render_at_64_and_32():
    font = noto_emoji_render.load_font()
    rgba = noto_emoji_render.render_glyph(font, 0x1F600)
    assert rgba.dtype == np.uint8 and rgba.shape[2] == 4 and min(rgba.shape[:2]) > 100
    assert noto_emoji_render.render_glyph(font, 0x200D) is None  # Zero-width joiner: empty.
    for size in (64, 32):
        image = noto_emoji_render.to_square_rgb(rgba, size)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        assert (image[0, 0] == 255).all()


def test_loader_yields_captioned_batches(emoji_dir, splits):
    source = datasets.get_data_source("noto_emoji", "train", emoji_dir, image_size=28)
    assert len(source) == len(splits["train"])  # 28 px reads the 32 px config.
    batch = next(pipeline.make_train_loader(source, batch_size=8, image_size=28, seed=0))
    assert batch["image"].shape == (8, 28, 28, 3) and batch["image"].dtype == np.float32
    assert -1.0 <= batch["image"].min() and batch["image"].max() == 1.0
    captions = {e["caption"] for e in splits["train"]}
    assert batch["caption"].shape == (8,) and set(batch["caption"]) <= captions
    assert datasets.num_classes("noto_emoji") is None
    summary = datasets.dataset_summary(f"noto_emoji/{SIZE}px", emoji_dir)
    assert summary.image_shape == (SIZE, SIZE, 3)
    assert set(summary.feature_keys) == {"image", "caption", "name", "keywords", "codepoint"}
    assert summary.num_examples == {"train": len(splits["train"]), "test": len(splits["test"])}


def test_config_for_image_sizes():
    assert [noto_emoji_builder.config_for(s) for s in (None, 16, 28, 32, 33, 64)] == [
        "64px",
        "32px",
        "32px",
        "32px",
        "64px",
        "64px",
    ]
    with pytest.raises(ValueError, match="up to 64"):
        noto_emoji_builder.config_for(128)
    with pytest.raises(ValueError, match="noto_emoji/32px"):
        datasets.get_data_source("noto_emoji/16px", "train", "/nonexistent")
    with pytest.raises(ValueError, match="Invalid split"):
        datasets.get_data_source("noto_emoji", "validation", "/nonexistent")


def test_missing_font_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("LDM_JAX_NOTO_EMOJI_FONT", str(tmp_path / "missing.ttf"))
    data_dir = str(tmp_path / "tfds")
    with pytest.raises(FileNotFoundError, match="bash scripts/install_debian_deps.sh") as info:
        datasets.get_data_source("noto_emoji", "train", data_dir)
    assert "\n" not in str(info.value) and "fonts-noto-color-emoji" in str(info.value)
    builder = noto_emoji_builder.NotoEmoji(data_dir=data_dir, config="64px")
    assert not builder.is_prepared()
