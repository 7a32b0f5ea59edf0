"""tfds builder for Noto emoji with semantic maps: every noto_emoji image and its colour classes.

Configs ``noto_emoji_segmentation/64px`` and ``/32px``; splits "train" and "test", the emoji and
their order exactly as in ``noto_emoji`` (`noto_emoji_glyphs`). Each example::

    {"image": uint8 [S, S, 3] (over white, identical to noto_emoji's),
     "segmentation": uint8 [S, S] class ids in [0, 9) (`emoji_palette.CLASS_NAMES`),
     "caption": str, "name": str, "keywords": str, "codepoint": int}

The map is `emoji_palette.label_map` of the image and its alpha: 0 (background) where the glyph
is transparent, else the nearest of 8 colour classes fitted once, on the train split, in CIELAB.
The class names, palette and display colours are in the dataset's metadata. Prepared offline from
the Debian packages of ``noto_emoji`` (fonts-noto-color-emoji, unicode-cldr-core)::

    source = get_source("train", data_dir, noto_emoji_builder.config_for(image_size))
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from ldm_jax.data import (
    emoji_palette,
    noto_emoji_builder,
    noto_emoji_glyphs,
    noto_emoji_render,
    split_slices,
    tfds_quiet,
)
from ldm_jax.data.decoded_source import DecodedSource

NAME = "noto_emoji_segmentation"
FILE_FORMAT = "array_record"
DOWNLOAD_CONFIG = tfds.download.DownloadConfig(try_download_gcs=False)


class NotoEmojiSegmentation(tfds.core.GeneratorBasedBuilder):
    """Noto emoji (as ``noto_emoji``) with per-pixel colour-class maps."""

    # tfds derives the registered name from the class name: "noto_emoji_segmentation".
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Background from alpha; 8 CIELAB colour classes fitted on train."}
    BUILDER_CONFIGS = [noto_emoji_builder.NotoEmojiConfig(size=s) for s in noto_emoji_builder.SIZES]
    code_path = epath.Path(__file__)  # See fashion_mnist_builder: no importlib_resources.
    CODEPOINTS: Sequence[int] | None = None  # Candidates to render; None: all (tests: a few).

    def _log_download_bytes(self) -> None:  # tfds prints these to stdout; `prepare` logs.
        pass

    def _log_download_done(self) -> None:
        pass

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Noto Color Emoji rendered over white (as noto_emoji) with a semantic map: "
                "background where transparent, else one of 8 colour classes (nearest CIELAB "
                "centroid fitted on the train split)."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
                    "segmentation": tfds.features.Tensor(shape=(size, size), dtype=np.uint8),
                    "caption": tfds.features.Text(),
                    "name": tfds.features.Text(),
                    "keywords": tfds.features.Text(),
                    "codepoint": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            disable_shuffling=True,  # Records in code point order.
            homepage="https://github.com/googlefonts/noto-emoji",
            metadata=tfds.core.MetadataDict(
                class_names=list(emoji_palette.CLASS_NAMES),
                centroids_lab=np.asarray(emoji_palette.CENTROIDS_LAB).tolist(),
                display_rgb=np.asarray(emoji_palette.DISPLAY_RGB).tolist(),
                alpha_threshold=emoji_palette.ALPHA_THRESHOLD,
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # Nothing to download.
        size = self.builder_config.size
        emoji = list(noto_emoji_glyphs.iter_emoji((size,), codepoints=self.CODEPOINTS))
        return {s: self._generate_examples(emoji, s) for s in ("train", "test")}

    def _generate_examples(
        self, emoji: Sequence[noto_emoji_glyphs.EmojiWithAlpha], split: str
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        size = self.builder_config.size
        for e in emoji:
            if e.split == split:
                image = e.images[size]  # [S, S, 3]
                yield (
                    e.text.codepoint,
                    {
                        "image": image,
                        "segmentation": emoji_palette.label_map(image, e.alphas[size]),
                        "caption": e.text.caption,
                        "name": e.text.name,
                        "keywords": ", ".join(e.text.keywords),
                        "codepoint": e.text.codepoint,
                    },
                )


def prepare(
    data_dir: str,
    config: str = f"{noto_emoji_builder.DEFAULT_SIZE}px",
    builder_class: type[NotoEmojiSegmentation] = NotoEmojiSegmentation,
) -> NotoEmojiSegmentation:
    """Prepares `noto_emoji_segmentation/<config>` into `data_dir` once; the builder.

    Args:
      data_dir: the tfds data folder.
      config: "64px" or "32px".
      builder_class: the builder (tests pass a subclass that renders a few code points).

    Raises:
      FileNotFoundError: the font is missing (the message says how to install it).
    """
    with tfds_quiet.quiet():
        builder = builder_class(data_dir=data_dir, config=config, file_format=FILE_FORMAT)
        if builder.is_prepared():
            return builder
        noto_emoji_render.load_font()  # Fail fast, with the install hint, before tfds starts.
        logging.info("Preparing %s/%s into %s (once)", builder.name, config, data_dir)
        start = time.perf_counter()
        try:
            builder.download_and_prepare(file_format=FILE_FORMAT, download_config=DOWNLOAD_CONFIG)
        except Exception:
            other = builder_class(data_dir=data_dir, config=config, file_format=FILE_FORMAT)
            if other.is_prepared():  # Another process prepared the same config meanwhile.
                return other
            raise
    logging.info("Prepared %s/%s in %.1f s", builder.name, config, time.perf_counter() - start)
    return builder


class NotoEmojiSegmentationSource(DecodedSource):
    """Random-access examples of a prepared split; text as str, code point as int."""

    text_keys = ("caption", "name", "keywords")
    int_keys = ("codepoint",)


def get_source(
    split: str,
    data_dir: str,
    config: str = f"{noto_emoji_builder.DEFAULT_SIZE}px",
    builder_class: type[NotoEmojiSegmentation] = NotoEmojiSegmentation,
) -> NotoEmojiSegmentationSource:
    """Prepares (once) and returns a split ("train", "test", tfds slicing allowed).

    Args:
      split: the split, e.g. "train" or "test[:100]".
      data_dir: the tfds data folder.
      config: "64px" or "32px" (`noto_emoji_builder.config_for(image_size)` picks one).
      builder_class: see `prepare`.
    """
    builder = prepare(data_dir, config, builder_class)
    return NotoEmojiSegmentationSource(split_slices.data_source(builder, split, NAME))
