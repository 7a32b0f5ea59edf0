"""Our `WordPieceTokenizer` on all-MiniLM-L6-v2's vocab.txt against the package's tokenizer.json.

The reference is the Rust `tokenizers` library (a test extra) reading the package's own
`tokenizer.json`: BertNormalizer (lowercase, accents stripped, CJK split), BertPreTokenizer,
WordPiece, `[CLS] ... [SEP]`, truncation and padding to 128.
"""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from ldm_jax.data import noto_emoji_render
from ldm_jax.models import minilm_weights
from ldm_jax.models.tokenizer import WordPieceTokenizer

LENGTH = 128  # the package's tokenizer.json truncates and pads to 128

EDGE_CASES = [
    "",
    "red heart",
    "smiling face with heart-eyes",
    "face with tears of joy, face, joy, laugh, tear",
    "flag: United Kingdom",
    "woman technologist: medium-dark skin tone",
    "Café déjà vu, naïve façade; Ångström ÉCOLE İstanbul",
    "straße, ﬁne, Æsir, ØRESUND",
    "Hello,world!!! (test) [x] {y} <z> — “quotes” ‘single’ don't... 1,000.50 $5 #1 @me",
    "emoji themselves: 😍 ❤️ 🇬🇧 👩🏽‍💻 ☃",
    "CJK 中文字符 and かな mixed",
    "tabs\tand\nnew lines\r\nand  many   spaces\u00a0nbsp\u200bzero-width",
    "unknownwordxqzj supercalifragilisticexpialidocious pneumonoultramicroscopic",
    "a" * 150 + " tokenised as one unknown word past 100 characters",
    "HELLO World MiXeD cAsE",
    "word " * 200,  # truncated to 126 pieces
]


@pytest.fixture(scope="module")
def reference() -> Tokenizer:
    tok = Tokenizer.from_file(str(minilm_weights.model_dir() / "tokenizer.json"))
    assert tok.truncation["max_length"] == LENGTH and tok.padding["length"] == LENGTH
    return tok


@pytest.fixture(scope="module")
def ours() -> WordPieceTokenizer:
    return WordPieceTokenizer.from_file(minilm_weights.vocab_path(), max_length=LENGTH)


def _reference_ids(reference: Tokenizer, texts: list[str]) -> np.ndarray:
    return np.asarray([e.ids for e in reference.encode_batch(texts)], dtype=np.int32)


def test_edge_cases_match_the_package_tokenizer(reference, ours):
    expected = _reference_ids(reference, EDGE_CASES)
    got = ours(EDGE_CASES)
    for text, e, g in zip(EDGE_CASES, expected, got, strict=True):
        assert g.tolist() == e.tolist(), text


def test_every_noto_emoji_caption_matches_the_package_tokenizer(reference, ours):
    annotations = noto_emoji_render.read_cldr_annotations()
    texts = []
    for cp in noto_emoji_render.candidate_codepoints():
        text = noto_emoji_render.describe(cp, annotations)
        if text is not None:
            texts += [text.caption, f"{chr(cp)} {text.name}"]
    assert len(texts) > 2000
    np.testing.assert_array_equal(ours(texts), _reference_ids(reference, texts))


def test_hand_checked_ids(ours):
    # Ids looked up in vocab.txt (line number = id): [CLS]=101, [SEP]=102, [UNK]=100, [PAD]=0.
    ids = ours(["red heart", "Café 😍"])[:, :6]
    assert ids.tolist() == [[101, 2417, 2540, 102, 0, 0], [101, 7668, 100, 102, 0, 0]]
    assert ours.tokenize("heart-eyes") == ["heart", "-", "eyes"]
    long = ours("word " * 200)[0]
    assert long[0] == 101 and long[-1] == 102 and (long[1:-1] == ours.vocab["word"]).all()
