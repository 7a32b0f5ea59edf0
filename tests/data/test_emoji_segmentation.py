"""noto_emoji_segmentation: colour classes in CIELAB, label maps that describe the emoji, the
committed palette as the train-split fit, the tfds builder and the registry.

Needs the Debian font of noto_emoji (bash scripts/install_debian_deps.sh). Builders are prepared
on a few code points (`SUBSET`) in tmp_path.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import rgb2lab

from ldm_jax.data import (
    colour_lab,
    datasets,
    emoji_palette,
    noto_emoji_glyphs,
    noto_emoji_render,
    noto_emoji_segmentation_builder,
    pipeline,
)

NAMED = {  # code point -> the class its centre must have
    0x1F534: "red",  # large red circle
    0x1F535: "blue",
    0x1F7E2: "green",
    0x1F7E1: "yellow",
    0x1F7E0: "orange",
    0x1F7E3: "purple",
    0x26AB: "dark",  # medium black circle
    0x2B1C: "light",  # white large square
}
# Faces, hearts, the named shapes and a test-split emoji (U+2728, sparkles).
SUBSET = (*range(0x1F600, 0x1F620), 0x2764, 0x2728, *NAMED)


@pytest.fixture(scope="module")
def rendered() -> list[noto_emoji_glyphs.EmojiWithAlpha]:
    return list(noto_emoji_glyphs.iter_emoji((32, 64), codepoints=SUBSET))


@pytest.fixture
def tiny_builder(monkeypatch):
    """The builder renders `SUBSET` only."""
    monkeypatch.setattr(noto_emoji_segmentation_builder.NotoEmojiSegmentation, "CODEPOINTS", SUBSET)


def test_lab_matches_scikit_image():
    grid = np.arange(0, 256, 15, dtype=np.uint8)
    rgb = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)  # [N, 3]
    ours = colour_lab.srgb_to_lab(rgb)
    np.testing.assert_allclose(ours, rgb2lab(rgb[None] / 255.0)[0], atol=0.05)
    np.testing.assert_allclose(ours[-1], [100.0, 0.0, 0.0], atol=0.02)  # White.
    with pytest.raises(ValueError, match="uint8"):
        colour_lab.srgb_to_lab(rgb.astype(np.float32))


def test_images_and_splits_are_noto_emojis(rendered):
    font = noto_emoji_render.load_font()
    assert [e.text.codepoint for e in rendered] == sorted(SUBSET)
    for e in rendered[::5]:
        rgba = noto_emoji_render.render_glyph(font, e.text.codepoint)
        for size in (32, 64):
            expected = noto_emoji_render.to_square_rgb(rgba, size)
            np.testing.assert_array_equal(e.images[size], expected)
            assert e.alphas[size].shape == (size, size) and e.alphas[size].dtype == np.uint8
        assert e.split == noto_emoji_render.split_of(e.text.codepoint)
    assert {e.split for e in rendered} == {"train", "test"}


def test_label_maps_describe_the_images(rendered):
    centroids = emoji_palette.CENTROIDS_LAB
    for e in rendered:
        for size in (32, 64):
            image, alpha = e.images[size], e.alphas[size]
            seg = emoji_palette.label_map(image, alpha)
            assert seg.shape == (size, size) and seg.dtype == np.uint8
            assert seg.max() < emoji_palette.NUM_CLASSES
            np.testing.assert_array_equal(seg == 0, alpha < emoji_palette.ALPHA_THRESHOLD)
            assert np.all(seg[alpha == 0] == 0) and image[alpha == 0].min() > 230  # ~white
            lab = rgb2lab(image / 255.0)  # [S, S, 3], scikit-image's conversion
            for c in np.unique(seg[seg > 0]):
                mean = lab[seg == c].mean(axis=0)
                nearest = np.argmin(((centroids - mean) ** 2).sum(axis=1)) + 1
                assert nearest == c, (hex(e.text.codepoint), size, c, mean)
    by_cp = {e.text.codepoint: e for e in rendered}
    for cp, name in NAMED.items():
        seg = emoji_palette.label_map(by_cp[cp].images[64], by_cp[cp].alphas[64])
        centre = seg[28:36, 28:36]
        assert np.all(centre == emoji_palette.CLASS_NAMES.index(name)), hex(cp)
    face = by_cp[0x1F600]  # grinning face: a yellow face with dark features
    seg = emoji_palette.label_map(face.images[64], face.alphas[64])
    shares = np.bincount(seg.ravel(), minlength=emoji_palette.NUM_CLASSES) / seg.size
    assert shares[emoji_palette.CLASS_NAMES.index("yellow")] > 0.3 and shares[0] > 0.1


def test_label_maps_are_deterministic_and_rgb_only_maps_agree(rendered):
    agree = []
    for e in rendered:
        a = emoji_palette.label_map(e.images[32], e.alphas[32])
        b = emoji_palette.label_map(e.images[32].copy(), e.alphas[32].copy())
        np.testing.assert_array_equal(a, b)
        agree.append(np.mean(emoji_palette.label_map_from_rgb(e.images[32]) == a))
    assert np.mean(agree) > 0.9
    display = emoji_palette.colourise(a)
    assert display.shape == (32, 32, 3) and np.all(display[a == 0] == 255)


def test_fit_recovers_clusters_from_seeds():
    rng = np.random.default_rng(0)
    truth = np.array([(230, 30, 30), (30, 30, 230), (30, 200, 30)], np.uint8)
    noise = rng.integers(-12, 13, (3, 500, 3))
    pixels = np.clip(truth[:, None].astype(int) + noise, 0, 255).astype(np.uint8).reshape(-1, 3)
    seeds = np.array([(255, 80, 80), (80, 80, 255), (80, 255, 80)], np.uint8)
    centroids, mean_rgb, iterations = emoji_palette.fit_palette(pixels, seeds)
    expected = [colour_lab.srgb_to_lab(pixels[i * 500 : (i + 1) * 500]).mean(0) for i in range(3)]
    np.testing.assert_allclose(centroids, expected, atol=1e-6)
    np.testing.assert_allclose(mean_rgb, truth, atol=2)
    again = emoji_palette.fit_palette(pixels[::-1], seeds)  # Order of pixels does not matter.
    np.testing.assert_allclose(again[0], centroids, atol=1e-9)
    assert 1 <= iterations < 20


def test_committed_palette_is_the_train_split_fit():
    centroids, mean_rgb, iterations = emoji_palette.fit_on_train_split()
    np.testing.assert_allclose(emoji_palette.CENTROIDS_LAB, centroids, atol=0.006)
    np.testing.assert_allclose(emoji_palette.DISPLAY_RGB[1:], mean_rgb, atol=0.51)
    assert iterations < emoji_palette.FIT_MAX_ITERATIONS
    seeds = colour_lab.srgb_to_lab(emoji_palette.SEED_RGB)
    nearest_seed = ((centroids[:, None] - seeds[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(nearest_seed, np.arange(len(seeds)))  # Names still hold.


def test_builder_writes_and_reads_back(tmp_path, tiny_builder, rendered):
    by_cp = {e.text.codepoint: e for e in rendered}
    data_dir = str(tmp_path)
    seen = []
    for split in ("train", "test"):
        source = datasets.get_data_source("noto_emoji_segmentation", split, data_dir, image_size=32)
        examples = source.__getitems__(range(len(source)))
        for ex in examples:
            e = by_cp[ex["codepoint"]]
            assert e.split == split and ex["name"] == e.text.name
            assert ex["caption"] == e.text.caption
            np.testing.assert_array_equal(ex["image"], e.images[32])
            expected = emoji_palette.label_map(e.images[32], e.alphas[32])
            np.testing.assert_array_equal(ex["segmentation"], expected)
            assert ex["segmentation"].dtype == np.uint8
        seen += [ex["codepoint"] for ex in examples]
    assert sorted(seen) == sorted(by_cp)
    summary = datasets.dataset_summary("noto_emoji_segmentation/32px", data_dir)
    assert summary.image_shape == (32, 32, 3)
    assert set(summary.feature_keys) == {
        "image",
        "segmentation",
        "caption",
        "name",
        "keywords",
        "codepoint",
    }
    builder = datasets.get_builder("noto_emoji_segmentation/32px", data_dir)
    assert tuple(builder.info.metadata["class_names"]) == emoji_palette.CLASS_NAMES
    # A second preparation elsewhere writes the same records.
    other = datasets.get_data_source("noto_emoji_segmentation/32px", "train", str(tmp_path / "b"))
    first = datasets.get_data_source("noto_emoji_segmentation/32px", "train", data_dir)
    for i in range(len(first)):
        np.testing.assert_array_equal(other[i]["segmentation"], first[i]["segmentation"])


def test_loader_batches_carry_the_maps(tmp_path, tiny_builder):
    source = datasets.get_data_source(
        "noto_emoji_segmentation", "train", str(tmp_path), image_size=64
    )
    batch = next(pipeline.make_train_loader(source, batch_size=4, image_size=64, seed=0))
    assert batch["image"].shape == (4, 64, 64, 3)
    assert batch["segmentation"].shape == (4, 64, 64) and batch["segmentation"].dtype == np.int32
    assert 0 <= batch["segmentation"].min() and batch["segmentation"].max() < 9
    assert datasets.num_segmentation_classes("noto_emoji_segmentation/64px") == 9
    assert datasets.num_segmentation_classes("synthetic_shapes", num_classes=6) == 7
    assert datasets.num_segmentation_classes("noto_emoji") is None
    assert datasets.num_classes("noto_emoji_segmentation") is None


def test_errors_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="noto_emoji_segmentation/32px"):
        datasets.get_data_source("noto_emoji_segmentation/16px", "train", str(tmp_path))
    with pytest.raises(ValueError, match="Invalid split"):
        datasets.get_data_source("noto_emoji_segmentation", "validation", str(tmp_path))
    monkeypatch.setenv("LDM_JAX_NOTO_EMOJI_FONT", str(tmp_path / "missing.ttf"))
    with pytest.raises(FileNotFoundError, match="fonts-noto-color-emoji") as info:
        datasets.get_data_source("noto_emoji_segmentation", "train", str(tmp_path / "tfds"))
    assert "\n" not in str(info.value)
