"""Noto Color Emoji rendered to small RGB images, with captions (no tfds here).

* **Which emoji.** Every single code point of the Unicode emoji blocks (`CANDIDATE_RANGES`) for
  which the font draws a non-empty colour bitmap. Pillow has no cmap query, so each candidate is
  rendered: a code point the font lacks comes back as the font's empty ".notdef" glyph, and
  invisible joiners, selectors and tags come back empty too; both are left out. Sequences (ZWJ,
  flags, keycaps, skin tones applied to a base) are not rendered.
* **Images.** Pillow draws the glyph's colour bitmap (the font is CBDT: only size 109 is valid,
  136 wide, 128 high, RGBA), which is composited over white, centred on a white square and
  reduced to the output size with Lanczos (antialiased): uint8 [S, S, 3].
* **Captions.** ``name`` is the lowercased Unicode name (Python's `unicodedata`), e.g. "grinning
  face" for U+1F600 or "heavy black heart" for U+2764. ``keywords`` are the English CLDR
  annotations of the Debian package ``unicode-cldr-core`` (`cldr_dir()`/annotations/en.xml, then
  annotationsDerived/en.xml): the text-to-speech short name first, then the keywords, without
  duplicates or the name itself. ``caption`` is "name, keyword, keyword, ...", e.g. "heavy black
  heart, red heart, heart". Without the CLDR package, keywords are empty and the caption is the
  name alone. An emoji newer than both Python's Unicode database and the CLDR release has no name
  and is left out (counted in `RenderStats.unnamed`).
* **Held-out split.** An emoji is in "test" when the SHA-256 of its code point written as
  ``"U+1F600"`` has a first 32 bits divisible by 10 (`split_of`), so about 10 %; each code point
  keeps its split whatever font version adds or drops other emoji.

Paths: the font is `DEFAULT_FONT` (package ``fonts-noto-color-emoji``), overridden by the
environment variable ``LDM_JAX_NOTO_EMOJI_FONT``; the CLDR folder is `DEFAULT_CLDR_DIR`, overridden
by ``LDM_JAX_CLDR_DIR``. Install both with ``bash scripts/install_debian_deps.sh``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ldm_jax.data.errors import DataError

DEFAULT_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
DEFAULT_CLDR_DIR = "/usr/share/unicode/cldr/common"
FONT_SIZE = 109  # The only size of the font's colour bitmaps that FreeType accepts.
CLDR_FILES = ("annotations/en.xml", "annotationsDerived/en.xml")
# Blocks holding the single-code-point emoji of Unicode 15 (keycap bases #, *, 0-9 included).
CANDIDATE_RANGES = (
    (0x0023, 0x0023),
    (0x002A, 0x002A),
    (0x0030, 0x0039),
    (0x00A9, 0x00AE),
    (0x2000, 0x2BFF),
    (0x3000, 0x32FF),
    (0x1F000, 0x1FAFF),
)
INSTALL_HINT = (
    "install it with: bash scripts/install_debian_deps.sh "
    "(or sudo apt-get install -y fonts-noto-color-emoji), or point LDM_JAX_NOTO_EMOJI_FONT at "
    "a copy of NotoColorEmoji.ttf"
)
_TEST_MODULUS = 10
_MISSING_PROBE = 0x0041  # "A": not in the emoji font, so it renders as the .notdef glyph.


@dataclasses.dataclass(frozen=True)
class EmojiText:
    """The text of one emoji: its name and CLDR keywords (see the module doc)."""

    codepoint: int
    name: str
    keywords: tuple[str, ...]

    @property
    def caption(self) -> str:
        return ", ".join((self.name, *self.keywords))


@dataclasses.dataclass(frozen=True)
class RenderedEmoji:
    """One emoji: its text, its split and its images (size -> uint8 [size, size, 3])."""

    text: EmojiText
    split: str
    images: dict[int, np.ndarray]


@dataclasses.dataclass(frozen=True)
class RenderStats:
    """What enumeration found: candidates tried, kept, without a glyph, without a name."""

    candidates: int
    kept: int
    no_glyph: int
    unnamed: int
    has_keywords: bool


def font_path() -> str:
    """The font file (env `LDM_JAX_NOTO_EMOJI_FONT` overrides `DEFAULT_FONT`)."""
    return os.environ.get("LDM_JAX_NOTO_EMOJI_FONT") or DEFAULT_FONT


def cldr_dir() -> str:
    """The CLDR `common` folder (env `LDM_JAX_CLDR_DIR` overrides `DEFAULT_CLDR_DIR`)."""
    return os.environ.get("LDM_JAX_CLDR_DIR") or DEFAULT_CLDR_DIR


def load_font(path: str | None = None) -> ImageFont.FreeTypeFont:
    """Opens the colour emoji font at its bitmap size.

    Raises:
      FileNotFoundError: the font file is missing (one line, with the install command).
      DataError: the file is not a font FreeType reads (one line, with the reinstall command).
    """
    path = path or font_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Noto Color Emoji font {path} not found: {INSTALL_HINT}.")
    # Single code points need no shaping: the basic layout is faster than raqm and takes any
    # code point (raqm rejects some format characters).
    try:
        return ImageFont.truetype(path, FONT_SIZE, layout_engine=ImageFont.Layout.BASIC)
    except OSError as e:  # FreeType: "unknown file format", "invalid pixel size", ...
        raise DataError(
            f"Noto Color Emoji font {path} cannot be read ({e}): reinstall it with: sudo apt-get "
            "install --reinstall fonts-noto-color-emoji, or point LDM_JAX_NOTO_EMOJI_FONT at a "
            "good copy of NotoColorEmoji.ttf."
        ) from e


def split_of(codepoint: int) -> str:
    """ "test" for about one emoji in ten (hash of "U+XXXX", see module doc), else "train"."""
    digest = hashlib.sha256(f"U+{codepoint:04X}".encode()).digest()
    return "test" if int.from_bytes(digest[:4], "big") % _TEST_MODULUS == 0 else "train"


def read_cldr_annotations(directory: str | None = None) -> dict[int, tuple[str, ...]]:
    """English CLDR annotations of single code points: code point -> (tts name, keywords...).

    Reads `CLDR_FILES` under `directory` (default `cldr_dir()`); the first file naming a code
    point wins. Returns {} when the package is not installed.
    """
    directory = directory or cldr_dir()
    found: dict[int, dict[str, list[str]]] = {}
    for rel in CLDR_FILES:
        path = os.path.join(directory, rel)
        if not os.path.isfile(path):
            continue
        seen_here: set[int] = set()
        for node in ET.parse(path).getroot().iter("annotation"):
            chars = (node.get("cp") or "").replace("\ufe0f", "")
            if len(chars) != 1 or not node.text:
                continue
            cp = ord(chars)
            if cp in found and cp not in seen_here:
                continue  # Named by an earlier file.
            seen_here.add(cp)
            entry = found.setdefault(cp, {"tts": [], "keywords": []})
            if node.get("type") == "tts":
                entry["tts"] = [node.text.strip()]
            else:
                entry["keywords"] = [k.strip() for k in node.text.split("|")]
    return {cp: tuple(e["tts"] + e["keywords"]) for cp, e in found.items()}


def describe(codepoint: int, annotations: dict[int, tuple[str, ...]]) -> EmojiText | None:
    """Name and keywords of one code point; None when neither Unicode nor CLDR names it."""
    cldr = annotations.get(codepoint, ())
    name = unicodedata.name(chr(codepoint), "").lower() or (cldr[0].lower() if cldr else "")
    if not name:
        return None
    keywords: list[str] = []
    for word in cldr:
        word = word.lower()
        if word and word != name and word not in keywords:
            keywords.append(word)
    return EmojiText(codepoint=codepoint, name=name, keywords=tuple(keywords))


def candidate_codepoints() -> Iterator[int]:
    """Every code point of `CANDIDATE_RANGES`, ascending."""
    for first, last in CANDIDATE_RANGES:
        yield from range(first, last + 1)


def render_glyph(font: ImageFont.FreeTypeFont, codepoint: int) -> np.ndarray | None:
    """The glyph's colour bitmap as uint8 [h, w, 4] RGBA; None if it draws nothing."""
    box = font.getbbox(chr(codepoint), mode="RGBA")
    left, top, right, bottom = (math.floor(box[0]), math.floor(box[1]), *map(math.ceil, box[2:]))
    if right <= left or bottom <= top:
        return None
    canvas = Image.new("RGBA", (right - left, bottom - top), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((-left, -top), chr(codepoint), font=font, embedded_color=True)
    rgba = np.asarray(canvas)  # [h, w, 4]
    return rgba if rgba[..., 3].any() else None


def white_square(rgba: np.ndarray) -> np.ndarray:
    """uint8 [h, w, 4] RGBA -> uint8 [s, s, 3], s = max(h, w): over white, centred on white."""
    h, w, _ = rgba.shape
    # uint16 is exact: rgb * a + 255 * (255 - a) + 127 <= 65152.
    alpha = rgba[..., 3:].astype(np.uint16)
    rgb = (rgba[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha) + 127) // 255
    side = max(h, w)
    square = np.full((side, side, 3), 255, np.uint8)  # [s, s, 3]
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = rgb
    return square


def resize(square: np.ndarray, size: int) -> np.ndarray:
    """uint8 [s, s, 3] -> uint8 [size, size, 3] with Lanczos (antialiased when reducing)."""
    image = Image.fromarray(square).resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image)


def to_square_rgb(rgba: np.ndarray, size: int) -> np.ndarray:
    """uint8 [h, w, 4] RGBA -> uint8 [size, size, 3]: over white, centred square, Lanczos."""
    return resize(white_square(rgba), size)


def render_all(
    sizes: Sequence[int] = (64,),
    *,
    path: str | None = None,
    annotations: dict[int, tuple[str, ...]] | None = None,
) -> tuple[list[RenderedEmoji], RenderStats]:
    """Renders every emoji of the font (see module doc), in code point order.

    Args:
      sizes: output sides, e.g. (64, 32); each image is reduced from the full bitmap.
      path: the font file; default `font_path()`.
      annotations: CLDR annotations; default `read_cldr_annotations()`.

    Returns:
      The emoji and the enumeration counts.

    Raises:
      FileNotFoundError: the font is missing (the message says how to install it).
    """
    font = load_font(path)
    annotations = read_cldr_annotations() if annotations is None else annotations
    notdef = render_glyph(font, _MISSING_PROBE)
    out: list[RenderedEmoji] = []
    candidates = no_glyph = unnamed = 0
    for cp in candidate_codepoints():
        candidates += 1
        rgba = render_glyph(font, cp)
        if rgba is None or (notdef is not None and np.array_equal(rgba, notdef)):
            no_glyph += 1
            continue
        text = describe(cp, annotations)
        if text is None:
            unnamed += 1
            continue
        square = white_square(rgba)  # [136, 136, 3]
        images = {s: resize(square, s) for s in sizes}
        out.append(RenderedEmoji(text=text, split=split_of(cp), images=images))
    stats = RenderStats(candidates, len(out), no_glyph, unnamed, bool(annotations))
    return out, stats
