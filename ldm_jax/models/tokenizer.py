"""A pure-Python WordPiece tokenizer (the BERT tokenizer of the paper's text encoder).

The paper's `BERTEmbedder` tokenises captions with `bert-base-uncased` (vocabulary of 30522
WordPieces), pads/truncates to 77 tokens as `[CLS] ... [SEP] [PAD]...`, and feeds the ids to its
transformer. This module reads any BERT `vocab.txt` (one token per line, id = line number) and
reproduces that pipeline: basic tokenisation (clean-up, optional lowercasing and accent
stripping, splitting on whitespace, punctuation and CJK characters), then greedy
longest-match-first WordPiece with `##` continuation pieces.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np

# Special tokens matched in the raw text when the vocabulary holds them.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    """BERT's clean-up drops control, format, private-use and surrogate characters (categories
    Cc, Cf, Co, Cs), as the Rust BertNormalizer does; unassigned ones (Cn) stay and become
    [UNK]. Private use was kept before (U+F0000 gave [UNK]; found by fuzzing)."""
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # All non-letter/number ASCII symbols count as punctuation, as in BERT.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    # The ranges of the Rust `tokenizers` BertNormalizer, which `BertTokenizerFast` (the paper's
    # BERTEmbedder tokenizer) and MiniLM's tokenizer.json use. It starts the CJK Extension E
    # range at 0x2B920 where Google's Python BERT has 0x2B820; found by fuzzing
    # (tests/models/test_tokenizer_fuzz.py): U+2B820..U+2B91F are not split off as CJK.
    ranges = (
        (0x4E00, 0x9FFF),
        (0x3400, 0x4DBF),
        (0x20000, 0x2A6DF),
        (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F),
        (0x2B920, 0x2CEAF),
        (0xF900, 0xFAFF),
        (0x2F800, 0x2FA1F),
    )
    return any(lo <= cp <= hi for lo, hi in ranges)


def basic_tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Splits text into words and punctuation marks (BERT's `BasicTokenizer`)."""
    cleaned = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_cjk(cp):
            cleaned.append(f" {ch} ")
        else:
            cleaned.append(" " if _is_whitespace(ch) else ch)
    words = []
    for word in "".join(cleaned).split():
        if lowercase:
            word = unicodedata.normalize("NFD", word.lower())
            word = "".join(c for c in word if unicodedata.category(c) != "Mn")
        current = ""
        for ch in word:
            if _is_punctuation(ch):
                if current:
                    words.append(current)
                words.append(ch)
                current = ""
            else:
                current += ch
        if current:
            words.append(current)
    return words


class WordPieceTokenizer:
    """BERT WordPiece tokenizer over a `vocab.txt`.

    Attributes:
      vocab: token -> id.
      lowercase: lowercase and strip accents first (True for "uncased" vocabularies).
      max_length: padded/truncated sequence length (77 in the paper).
    """

    def __init__(
        self,
        vocab: dict[str, int],
        lowercase: bool = True,
        max_length: int = 77,
        unk_token: str = "[UNK]",
        max_chars_per_word: int = 100,
    ):
        self.vocab = dict(vocab)
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        self.lowercase = lowercase
        self.max_length = max_length
        self.unk_token = unk_token
        self.max_chars_per_word = max_chars_per_word
        for special in ("[CLS]", "[SEP]", "[PAD]", unk_token):
            if special not in self.vocab:
                raise ValueError(f"WordPiece vocabulary lacks the special token {special}.")
        specials = sorted({*SPECIAL_TOKENS, unk_token} & set(self.vocab), key=len, reverse=True)
        self._specials = re.compile("|".join(re.escape(t) for t in specials))

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs) -> WordPieceTokenizer:
        """Reads a `vocab.txt` (one token per line; the line number is the id)."""
        with open(path, encoding="utf-8") as f:
            tokens = [line.rstrip("\n") for line in f]
        return cls({t: i for i, t in enumerate(tokens) if t}, **kwargs)

    @property
    def pad_id(self) -> int:
        return self.vocab["[PAD]"]

    def wordpiece(self, word: str) -> list[str]:
        """Greedy longest-match-first split of one word into vocabulary pieces."""
        if len(word) > self.max_chars_per_word:
            return [self.unk_token]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:
                return [self.unk_token]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Text -> WordPiece strings. A special token written in the text ("[SEP]", exact case)
        stays that token, as the Rust tokenizers' added vocabulary matches it in the raw text
        (`BertTokenizerFast`, MiniLM's tokenizer.json; found by fuzzing)."""
        pieces, start = [], 0
        for match in self._specials.finditer(text):
            pieces += self._plain_tokens(text[start : match.start()])
            pieces.append(match.group())
            start = match.end()
        return pieces + self._plain_tokens(text[start:])

    def _plain_tokens(self, text: str) -> list[str]:
        return [p for w in basic_tokenize(text, self.lowercase) for p in self.wordpiece(w)]

    def dropped_tokens(self, text: str) -> int:
        """How many of `text`'s pieces `encode` drops: it keeps `max_length - 2` between [CLS]
        and [SEP] (longer texts are truncated, as the paper's and transformers' tokenizers do)."""
        return max(0, len(self.tokenize(text)) - (self.max_length - 2))

    def encode(self, text: str) -> list[int]:
        """Text -> `max_length` ids: [CLS] pieces (truncated) [SEP] then [PAD]s."""
        ids = [self.vocab[p] for p in self.tokenize(text)][: self.max_length - 2]
        ids = [self.vocab["[CLS]"], *ids, self.vocab["[SEP]"]]
        return ids + [self.pad_id] * (self.max_length - len(ids))

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """One text or a batch -> int32 ids [B, max_length]."""
        batch = [texts] if isinstance(texts, str) else list(texts)
        return np.asarray([self.encode(t) for t in batch], dtype=np.int32)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Ids -> text, joining `##` pieces onto the previous word."""
        special = {"[CLS]", "[SEP]", "[PAD]"}
        out = []
        for i in ids:
            tok = self.inv_vocab.get(int(i), self.unk_token)
            if skip_special and tok in special:
                continue
            if tok.startswith("##") and out:
                out[-1] += tok[2:]
            else:
                out.append(tok)
        return " ".join(out)
