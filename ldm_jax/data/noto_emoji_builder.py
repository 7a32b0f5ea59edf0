"""tfds builder for the Noto Color Emoji dataset: rendered emoji with captions, offline.

Configs ``noto_emoji/64px`` and ``noto_emoji/32px``; splits "train" and "test" (the held-out
emoji of `noto_emoji_render.split_of`, about 10 %); records in code point order. Each example::

    {"image": uint8 [S, S, 3] (white background), "caption": str, "name": str,
     "keywords": str (", "-joined, "" without CLDR), "codepoint": int}

Prepared without TensorFlow or network access, from the Debian packages
``fonts-noto-color-emoji`` and (for keywords) ``unicode-cldr-core``::

    source = noto_emoji_builder.get_source("train", data_dir, config_for(image_size))

A dataset is prepared once per data_dir and config: if the CLDR package is installed later,
delete ``data_dir/noto_emoji`` to prepare it again with keywords.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from ldm_jax.data import noto_emoji_render, split_slices, tfds_quiet
from ldm_jax.data.decoded_source import DecodedSource

NAME = "noto_emoji"
SIZES = (64, 32)
DEFAULT_SIZE = 64
FILE_FORMAT = "array_record"
DOWNLOAD_CONFIG = tfds.download.DownloadConfig(try_download_gcs=False)
_TEXT_KEYS = ("caption", "name", "keywords")


class NotoEmojiConfig(tfds.core.BuilderConfig):
    """One output size."""

    def __init__(self, *, size: int, **kwargs: Any):
        super().__init__(name=f"{size}px", description=f"{size}x{size} RGB", **kwargs)
        self.size = size


class NotoEmoji(tfds.core.GeneratorBasedBuilder):
    """Every single-code-point emoji of Noto Color Emoji (Debian), rendered, with captions."""

    # tfds derives the registered name from the class name: "noto_emoji".
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Rendered with Pillow, Lanczos-reduced; Unicode + CLDR captions."}
    BUILDER_CONFIGS = [NotoEmojiConfig(size=s) for s in SIZES]
    code_path = epath.Path(__file__)  # See fashion_mnist_builder: no importlib_resources.

    def _log_download_bytes(self) -> None:  # tfds prints these to stdout; `prepare` logs.
        pass

    def _log_download_done(self) -> None:
        pass

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Noto Color Emoji (Debian fonts-noto-color-emoji, OFL-1.1) rendered over white, "
                "captioned with Unicode names and English CLDR keywords (unicode-cldr-core)."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
                    "caption": tfds.features.Text(),
                    "name": tfds.features.Text(),
                    "keywords": tfds.features.Text(),
                    "codepoint": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            disable_shuffling=True,  # Records in code point order.
            homepage="https://github.com/googlefonts/noto-emoji",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # Nothing to download.
        emoji, stats = noto_emoji_render.render_all((self.builder_config.size,))
        self.info.metadata["has_keywords"] = stats.has_keywords
        self.info.metadata["unnamed"] = stats.unnamed
        return {s: self._generate_examples(emoji, s) for s in ("train", "test")}

    def _generate_examples(
        self, emoji: Sequence[noto_emoji_render.RenderedEmoji], split: str
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        size = self.builder_config.size
        for e in emoji:
            if e.split == split:
                yield (
                    e.text.codepoint,
                    {
                        "image": e.images[size],
                        "caption": e.text.caption,
                        "name": e.text.name,
                        "keywords": ", ".join(e.text.keywords),
                        "codepoint": e.text.codepoint,
                    },
                )


def config_for(image_size: int | None) -> str:
    """The config name for a model size: the smallest stored size >= image_size ("64px" if None).

    Raises:
      ValueError: image_size is larger than the largest stored size (or not positive).
    """
    if image_size is None:
        return f"{DEFAULT_SIZE}px"
    fits = [s for s in sorted(SIZES) if s >= int(image_size)]
    if int(image_size) <= 0 or not fits:
        raise ValueError(
            f"noto_emoji is stored at {sorted(SIZES)} px; config.data.image_size={image_size} "
            f"must be a positive size up to {max(SIZES)}."
        )
    return f"{fits[0]}px"


def prepare(data_dir: str, config: str = f"{DEFAULT_SIZE}px") -> NotoEmoji:
    """Prepares `noto_emoji/<config>` into `data_dir` (no-op if already prepared); the builder.

    Raises:
      FileNotFoundError: the font is missing (the message says how to install it).
    """
    with tfds_quiet.quiet():
        builder = NotoEmoji(data_dir=data_dir, config=config, file_format=FILE_FORMAT)
        if builder.is_prepared():
            return builder
        noto_emoji_render.load_font()  # Fail fast, with the install hint, before tfds starts.
        logging.info("Preparing %s/%s into %s (once)", NAME, config, data_dir)
        start = time.perf_counter()
        try:
            builder.download_and_prepare(file_format=FILE_FORMAT, download_config=DOWNLOAD_CONFIG)
        except Exception:
            other = NotoEmoji(data_dir=data_dir, config=config, file_format=FILE_FORMAT)
            if other.is_prepared():  # Another process prepared the same config meanwhile.
                return other
            raise
    if not builder.info.metadata.get("has_keywords", True):
        logging.warning(
            "noto_emoji captions hold Unicode names only: install unicode-cldr-core "
            "(bash scripts/install_debian_deps.sh) and delete %s/%s for CLDR keywords.",
            data_dir,
            NAME,
        )
    logging.info("Prepared %s/%s in %.1f s", NAME, config, time.perf_counter() - start)
    return builder


class NotoEmojiSource(DecodedSource):
    """Random-access examples of a prepared split; text as str, code point as int."""

    text_keys = _TEXT_KEYS
    int_keys = ("codepoint",)


def get_source(split: str, data_dir: str, config: str = f"{DEFAULT_SIZE}px") -> NotoEmojiSource:
    """Prepares (once) and returns a split ("train", "test", tfds slicing allowed).

    Args:
      split: the split, e.g. "train" or "test[:100]".
      data_dir: the tfds data folder.
      config: "64px" or "32px" (`config_for(image_size)` picks one for a model size).
    """
    builder = prepare(data_dir, config)
    return NotoEmojiSource(split_slices.data_source(builder, split, NAME))
