"""CLIP's byte-level BPE tokenizer, reading a diffusers `tokenizer/` folder.

Stable Diffusion ships its tokenizer as `vocab.json` (token -> id), `merges.txt` (BPE merges in
priority order, after a `#version` line) and, optionally, `tokenizer_config.json` and
`special_tokens_map.json` (the special tokens and `model_max_length`). SD v1 pads with
`<|endoftext|>` (id 49407), SD v2 with `"!"` (id 0).

The tokenisation reproduces transformers' `CLIPTokenizer` (transformers 5, built on the Rust
`tokenizers` library), which is what the SD pipelines call; it does NOT use ftfy or HTML
unescaping (CLIP's original `SimpleTokenizer` and transformers 4's slow tokenizer with ftfy
installed do; they differ only on mojibake and HTML entities). Step by step:

1. Special tokens (bos, eos, unk, pad) found in the text become their ids. A special token
   declared with `"normalized": false` (or as a bare string) is matched in the raw text, one with
   `"normalized": true` in the normalised text (so SD v2's "<|ENDOFTEXT|>" is one token and SD
   v1's is not), as `tokenizers`' added vocabulary does. SD v2's pad "!" is such a token: a "!"
   in a prompt becomes id 0, not the word "!</w>" (transformers does the same).
2. Normalisation: Unicode NFC, every whitespace run -> one space, lower case character by
   character (no final-sigma rule, as Rust's `char::to_lowercase`).
3. Pre-tokenisation: CLIP's pattern keeps `'s 't 're 've 'm 'll 'd`, letter runs, single digits
   and runs of other non-space characters (whitespace is dropped); each piece is then split
   again by GPT-2's byte-level pattern (this only changes pieces such as "<|endoftext|>" that
   were not matched as special tokens) and mapped byte by byte to printable characters.
4. BPE on each word with `</w>` on its last symbol, merges applied lowest rank first.

`__call__` returns what `tokenizer(texts, padding="max_length", max_length=..., truncation=True)`
returns in the SD pipelines: bos, at most max_length - 2 ids, eos, then pad ids.
"""

from __future__ import annotations

import functools
import heapq
import json
import os
import pathlib
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import regex

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"
CONFIG_FILE, SPECIAL_TOKENS_FILE = "tokenizer_config.json", "special_tokens_map.json"
FAST_FILE = (
    "tokenizer.json"  # what transformers 5's save_pretrained writes (vocab and merges inside)
)
SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")  # transformers' order
DEFAULT_MAX_LENGTH = 77
_LAYOUT = (
    f"a CLIP tokenizer folder holds {VOCAB_FILE} and {MERGES_FILE} (and optionally "
    f"{CONFIG_FILE}, {SPECIAL_TOKENS_FILE}), or {FAST_FILE}, as a diffusers model's tokenizer/ "
    "folder"
)

_WHITESPACE = regex.compile(r"\p{White_Space}+")
_CLIP_PATTERN = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}"
    r"|[^\p{White_Space}\p{L}\p{N}]+"
)
_GPT2_PATTERN = regex.compile(
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+"
    r"|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+"
)


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table (the vocabulary's alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def normalize(text: str) -> str:
    """NFC, whitespace runs -> " ", per-character lower case (transformers' CLIP normaliser)."""
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text))
    return "".join(c.lower() for c in text)


def _content(token: str | Mapping[str, Any]) -> tuple[str, bool]:
    """A special token as json stores it (a string, or an AddedToken dict) -> (text, normalized).

    A bare string is not normalised (matched in the raw text), as transformers registers it."""
    if isinstance(token, Mapping):
        return str(token["content"]), bool(token.get("normalized", True))
    return str(token), False


def _merge_pairs(lines: Sequence[str]) -> list[tuple[str, str]]:
    """merges.txt lines ("a b"; a "#version" header) -> merge pairs in priority order."""
    merges = []
    for line in lines:
        parts = line.split()
        if line.startswith("#version") or len(parts) != 2:
            continue
        merges.append((parts[0], parts[1]))
    return merges


def _read_fast_tokenizer(
    path: pathlib.Path,
) -> tuple[dict[str, int], list[tuple[str, str]], dict[str, bool]]:
    """(vocab, merges, special token -> normalized) of a tokenizers-library `tokenizer.json`
    holding a BPE model (merges as "a b" strings or [a, b] pairs)."""
    data = json.loads(path.read_text("utf-8"))
    model = data.get("model") or {}
    if model.get("type", "BPE") != "BPE" or "vocab" not in model:
        raise ValueError(f"CLIP tokenizer: {path} does not hold a BPE model.")
    pairs = [m.split() if isinstance(m, str) else m for m in model.get("merges", [])]
    merges = [(str(a), str(b)) for a, b in pairs]
    added = {
        str(t["content"]): bool(t.get("normalized", True)) for t in data.get("added_tokens", [])
    }
    return dict(model["vocab"]), merges, added


def _missing(path: pathlib.Path) -> FileNotFoundError:
    return FileNotFoundError(f"CLIP tokenizer: {path} is missing; {_LAYOUT}.")


class ClipTokenizer:
    """CLIP's byte-level BPE: texts -> [N, max_length] int32 ids (bos, ids, eos, pad).

    Attributes:
      vocab: token -> id.
      merges: BPE merges, highest priority first.
      max_length: ids per text, bos and eos included.
      bos_token, eos_token, pad_token, unk_token: the special tokens' texts.
    """

    def __init__(
        self,
        vocab: Mapping[str, int],
        merges: Sequence[tuple[str, str]],
        max_length: int = DEFAULT_MAX_LENGTH,
        bos_token: str | Mapping[str, Any] = BOS,
        eos_token: str | Mapping[str, Any] = EOS,
        pad_token: str | Mapping[str, Any] = EOS,
        unk_token: str | Mapping[str, Any] = EOS,
        normalized: Mapping[str, bool] | None = None,
    ):
        """Builds the tokenizer.

        Args:
          vocab: token -> id.
          merges: BPE merge pairs in priority order.
          max_length: ids per text (>= 2: bos and eos).
          bos_token, eos_token, pad_token, unk_token: each a string or an AddedToken dict
            (`{"content": ..., "normalized": ...}`), as tokenizer configs store them. When two
            name the same text, the later one (in this order) sets whether it is normalised.
          normalized: overrides, special token text -> normalized (e.g. from a saved
            `added_tokens_decoder`).

        Raises:
          ValueError: max_length < 2, or a special token is not in the vocabulary.
        """
        if max_length < 2:
            raise ValueError(
                f"ClipTokenizer: max_length must be >= 2 (bos, eos), got {max_length}."
            )
        self.vocab = dict(vocab)
        self.merges = [tuple(m) for m in merges]
        self.max_length = int(max_length)
        self._normalized: dict[str, bool] = {}
        names = {}
        for name, token in zip(
            SPECIAL_NAMES, (bos_token, eos_token, unk_token, pad_token), strict=True
        ):
            text, norm = _content(token)
            if text not in self.vocab:
                raise ValueError(f"ClipTokenizer: {name} {text!r} is not in the vocabulary.")
            names[name] = text
            self._normalized[text] = norm
        self._normalized.update({k: v for k, v in (normalized or {}).items() if k in self.vocab})
        self.bos_token, self.eos_token = names["bos_token"], names["eos_token"]
        self.unk_token, self.pad_token = names["unk_token"], names["pad_token"]
        self._ranks = {pair: i for i, pair in enumerate(self.merges)}
        self._byte_chars = bytes_to_unicode()
        self._cache: dict[str, list[int]] = {}
        self._raw_specials = self._pattern(t for t, n in self._normalized.items() if not n)
        self._norm_specials = self._pattern(t for t, n in self._normalized.items() if n)

    @staticmethod
    def _pattern(tokens) -> regex.Pattern | None:
        tokens = sorted(tokens, key=len, reverse=True)  # leftmost, then longest
        return regex.compile("|".join(regex.escape(t) for t in tokens)) if tokens else None

    @property
    def bos_id(self) -> int:
        return self.vocab[self.bos_token]

    @property
    def eos_id(self) -> int:
        return self.vocab[self.eos_token]

    @property
    def pad_id(self) -> int:
        return self.vocab[self.pad_token]

    @classmethod
    def from_dir(cls, directory: str | os.PathLike, max_length: int | None = None) -> ClipTokenizer:
        """Reads a diffusers/transformers `tokenizer/` folder.

        Special tokens and `model_max_length` come from `tokenizer_config.json`, overridden by
        `special_tokens_map.json` unless the config has an `added_tokens_decoder` (transformers'
        rule). Missing both, CLIP's defaults: bos <|startoftext|>, eos/unk/pad <|endoftext|>.

        Args:
          directory: the folder.
          max_length: ids per text; default `model_max_length` of the config, else 77.

        Raises:
          FileNotFoundError: vocab.json or merges.txt is missing (one line, naming it).
        """
        directory = pathlib.Path(directory)
        fast = directory / FAST_FILE
        classic = all((directory / name).is_file() for name in (VOCAB_FILE, MERGES_FILE))
        added: dict[str, bool] = {}
        if not classic and fast.is_file():  # transformers 5 saves only tokenizer.json
            vocab, merges, added = _read_fast_tokenizer(fast)
        else:
            for name in (VOCAB_FILE, MERGES_FILE):
                if not (directory / name).is_file():
                    raise _missing(directory / name)
            vocab = json.loads((directory / VOCAB_FILE).read_text("utf-8"))
            merges = _merge_pairs((directory / MERGES_FILE).read_text("utf-8").splitlines())
        config = {}
        if (directory / CONFIG_FILE).is_file():
            config = json.loads((directory / CONFIG_FILE).read_text("utf-8"))
        normalized = None
        if isinstance(config.get("added_tokens_decoder"), Mapping):
            normalized = {
                str(t["content"]): bool(t.get("normalized", True))
                for t in config["added_tokens_decoder"].values()
            }
        elif (directory / SPECIAL_TOKENS_FILE).is_file():
            config.update(json.loads((directory / SPECIAL_TOKENS_FILE).read_text("utf-8")))
        elif added:
            normalized = added
        defaults = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
        specials = {k: config.get(k) or v for k, v in defaults.items()}
        if max_length is None:
            model_max = config.get("model_max_length")
            max_length = int(model_max) if model_max and model_max < 1e6 else DEFAULT_MAX_LENGTH
        return cls(vocab, merges, max_length, normalized=normalized, **specials)

    def save(self, directory: str | os.PathLike) -> pathlib.Path:
        """Writes vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json (the
        layout SD's hub folders use; `from_dir` and transformers' `CLIPTokenizer` read it)."""
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / VOCAB_FILE).write_text(json.dumps(self.vocab, ensure_ascii=False), "utf-8")
        merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges)
        (directory / MERGES_FILE).write_text(merges, "utf-8")
        specials = {
            name: {
                "content": text,
                "lstrip": False,
                "normalized": self._normalized[text],
                "rstrip": False,
                "single_word": False,
            }
            for name, text in zip(
                SPECIAL_NAMES,
                (self.bos_token, self.eos_token, self.unk_token, self.pad_token),
                strict=True,
            )
        }
        config = {
            **specials,
            "add_prefix_space": False,
            "do_lower_case": True,
            "errors": "replace",
            "model_max_length": self.max_length,
            "tokenizer_class": "CLIPTokenizer",
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2), "utf-8")
        (directory / SPECIAL_TOKENS_FILE).write_text(json.dumps(specials, indent=2), "utf-8")
        return directory

    def _bpe(self, word: str) -> list[int]:
        """One pre-token (printable byte characters) -> ids, `</w>` on its last symbol.

        Merges are applied lowest rank first, each rank's occurrences left to right, as CLIP's
        BPE does; a heap of (rank, position) over a linked list of symbols makes that
        O(n log n) in the word's length (the round-by-round rescan took 14 s for a 16,000
        character word and grows quadratically)."""
        if word in self._cache:
            return self._cache[word]
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        n = len(symbols)
        nxt, prev = list(range(1, n + 1)), list(range(-1, n - 1))
        nxt[-1] = -1
        alive = [True] * n
        heap: list[tuple[int, int, str, str]] = []

        def push(i: int) -> None:
            j = nxt[i]
            if i >= 0 and j >= 0:
                rank = self._ranks.get((symbols[i], symbols[j]))
                if rank is not None:
                    heapq.heappush(heap, (rank, i, symbols[i], symbols[j]))

        for i in range(n - 1):
            push(i)
        while heap:
            _, i, a, b = heapq.heappop(heap)
            j = nxt[i]
            if not alive[i] or j < 0 or symbols[i] != a or symbols[j] != b:
                continue  # stale: a neighbour was merged since this pair was pushed
            symbols[i], alive[j] = a + b, False
            nxt[i] = nxt[j]
            if nxt[j] >= 0:
                prev[nxt[j]] = i
            push(prev[i])
            push(i)
        unk = self.vocab[self.unk_token]
        ids = [self.vocab.get(s, unk) for s, keep in zip(symbols, alive, strict=True) if keep]
        self._cache[word] = ids
        return ids

    def _split(self, text: str, pattern: regex.Pattern | None):
        """Yields (piece, is_special): `text` cut around the matches of `pattern`."""
        if pattern is None:
            yield text, False
            return
        start = 0
        for m in pattern.finditer(text):
            if m.start() > start:
                yield text[start : m.start()], False
            yield m.group(), True
            start = m.end()
        if start < len(text):
            yield text[start:], False

    def encode(self, text: str) -> list[int]:
        """One text -> BPE ids, without bos/eos and without truncation."""
        ids: list[int] = []
        for raw, special in self._split(text, self._raw_specials):
            if special:
                ids.append(self.vocab[raw])
                continue
            for piece, special2 in self._split(normalize(raw), self._norm_specials):
                if special2:
                    ids.append(self.vocab[piece])
                    continue
                for clip_piece in _CLIP_PATTERN.findall(piece):
                    for word in _GPT2_PATTERN.findall(clip_piece):
                        chars = "".join(self._byte_chars[b] for b in word.encode("utf-8"))
                        ids.extend(self._bpe(chars))
        return ids

    def dropped_tokens(self, text: str) -> int:
        """How many of `text`'s ids `__call__` drops: it keeps `max_length - 2` between bos and
        eos (longer prompts are truncated, as the SD pipelines do, with a warning)."""
        return max(0, len(self.encode(text)) - (self.max_length - 2))

    def __call__(self, texts: Sequence[str] | str) -> np.ndarray:
        """Texts -> [N, max_length] int32: bos, ids truncated to max_length - 2, eos, pad."""
        if isinstance(texts, str):
            texts = [texts]
        out = np.full((len(texts), self.max_length), self.pad_id, np.int32)
        for row, text in zip(out, texts, strict=True):
            ids = [self.bos_id, *self.encode(text)[: self.max_length - 2], self.eos_id]
            row[: len(ids)] = ids
        return out
