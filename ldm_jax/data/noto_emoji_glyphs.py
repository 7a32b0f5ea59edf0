"""Noto Color Emoji rendered with their coverage (alpha) kept: the input of the segmentation set.

The emoji, their order, captions, held-out split and RGB images are exactly those of the
``noto_emoji`` dataset (`noto_emoji_render`: same enumeration, same compositing over white, same
centring and Lanczos reduction). Besides the RGB image, each emoji keeps its alpha channel reduced
the same way (centred on a transparent square, Lanczos): uint8 [S, S], 0 where the glyph draws
nothing, 255 where it is opaque.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from ldm_jax.data import noto_emoji_render


@dataclasses.dataclass(frozen=True)
class EmojiWithAlpha:
    """One emoji: its text, split, RGB images and alpha maps by output size."""

    text: noto_emoji_render.EmojiText
    split: str
    images: dict[int, np.ndarray]  # size -> uint8 [S, S, 3], over white
    alphas: dict[int, np.ndarray]  # size -> uint8 [S, S], coverage


def alpha_square(rgba: np.ndarray, size: int) -> np.ndarray:
    """uint8 [h, w, 4] -> uint8 [size, size]: the alpha channel centred on a transparent square
    of side max(h, w) (the placement of `noto_emoji_render.white_square`), Lanczos-reduced."""
    h, w, _ = rgba.shape
    side = max(h, w)
    square = np.zeros((side, side), np.uint8)  # [s, s]
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = rgba[..., 3]
    image = Image.fromarray(square).resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image)


def iter_emoji(
    sizes: Sequence[int] = (64,),
    *,
    path: str | None = None,
    annotations: dict[int, tuple[str, ...]] | None = None,
    codepoints: Iterable[int] | None = None,
) -> Iterator[EmojiWithAlpha]:
    """Every emoji of `noto_emoji_render.render_all`, in code point order, with alpha.

    Args:
      sizes: output sides, e.g. (64, 32).
      path: the font file; default `noto_emoji_render.font_path()`.
      annotations: CLDR annotations; default `noto_emoji_render.read_cldr_annotations()`.
      codepoints: only these candidates (tests build small subsets); default all of
        `noto_emoji_render.candidate_codepoints()`.

    Raises:
      FileNotFoundError: the font is missing (the message says how to install it).
    """
    font = noto_emoji_render.load_font(path)
    if annotations is None:
        annotations = noto_emoji_render.read_cldr_annotations()
    notdef = noto_emoji_render.render_glyph(font, 0x0041)  # "A": not in the font -> .notdef.
    candidates = noto_emoji_render.candidate_codepoints() if codepoints is None else codepoints
    for cp in sorted(candidates):
        rgba = noto_emoji_render.render_glyph(font, cp)  # [h, w, 4] or None
        if rgba is None or (notdef is not None and np.array_equal(rgba, notdef)):
            continue
        text = noto_emoji_render.describe(cp, annotations)
        if text is None:
            continue
        white = noto_emoji_render.white_square(rgba)  # [s, s, 3]
        yield EmojiWithAlpha(
            text=text,
            split=noto_emoji_render.split_of(cp),
            images={s: noto_emoji_render.resize(white, s) for s in sizes},
            alphas={s: alpha_square(rgba, s) for s in sizes},
        )
