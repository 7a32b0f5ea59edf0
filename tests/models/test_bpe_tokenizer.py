"""`ClipTokenizer` against transformers' `CLIPTokenizer` reading the same folder.

The folders hold CLIP's real vocabulary (built from open_clip's packaged BPE merges), padded as
SD v1 (`<|endoftext|>`) and SD v2 (`"!"`, id 0), and the tiny test vocabulary; the reference is
transformers 5's tokenizer (the Rust `tokenizers` library) called as the SD pipelines call it.
"""

from __future__ import annotations

import numpy as np
import pytest
import transformers

from ldm_jax.models.bpe_tokenizer import ClipTokenizer
from tests import clip_fixtures

EDGE_CASES = [
    "",
    "a photo of an astronaut riding a horse on mars",
    "UPPER lower MiXeD CamelCase",
    "Café déjà vu, naïve façade; Ångström ÉCOLE İstanbul ΟΔΟΣ straße ﬁne",
    "e\u0301 combining accents, Ñ vs N\u0303",
    "東京タワー 北京 서울 हिन्दी नमस्ते",
    "emoji 😍 ❤️ 🇬🇧 👩🏽‍💻 ☃",
    "it's we're I'VE they'll he'd I'm don't ''s '' 's",
    "1,000.50 $5 #1 @me 2024-01-01 3.14159 x2 42nd",
    "!!!???... ---- (((x))) <html>&amp; \\path/ a_b",
    "  multiple   spaces\n\nnew\tlines \r\n trailing  ",
    "nbsp\u00a0ideographic\u3000space zero\u200bwidth \x1c\x85",
    "hello! wow!",
    "a <|endoftext|> b <|startoftext|> c <|ENDOFTEXT|> <|StartOfText|>",
    "a very long prompt, " * 30,
]


@pytest.fixture(scope="module", params=["<|endoftext|>", "!"], ids=["sd1_pad_eos", "sd2_pad_0"])
def real_folder(request, tmp_path_factory):
    return clip_fixtures.write_clip_tokenizer(tmp_path_factory.mktemp("tok"), request.param)


def _reference(folder, texts, max_length=77):
    tok = transformers.CLIPTokenizer.from_pretrained(folder)
    out = tok(texts, padding="max_length", max_length=max_length, truncation=True)
    return np.array(out["input_ids"], np.int32)


def test_real_vocab_matches_transformers(real_folder):
    ours = ClipTokenizer.from_dir(real_folder)
    ids = ours(EDGE_CASES)
    assert ids.dtype == np.int32 and ids.shape == (len(EDGE_CASES), 77)
    np.testing.assert_array_equal(ids, _reference(real_folder, EDGE_CASES))
    pad = 0 if ours.pad_token == "!" else 49407
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (49406, 49407, pad)
    assert ids[0, :3].tolist() == [49406, 49407, pad]
    assert ids[-1, -1] == 49407  # truncated to 75 ids, then eos


def test_encode_without_specials_and_shorter_length(real_folder):
    ours = ClipTokenizer.from_dir(real_folder, max_length=16)
    ref = transformers.CLIPTokenizer.from_pretrained(real_folder)
    for text in EDGE_CASES:
        assert ours.encode(text) == ref(text, add_special_tokens=False)["input_ids"], text
    np.testing.assert_array_equal(ours(EDGE_CASES), _reference(real_folder, EDGE_CASES, 16))


@pytest.mark.parametrize("pad", ["<|endoftext|>", "!"])
def test_tiny_vocab_matches_transformers(tmp_path, pad):
    folder = clip_fixtures.write_tiny_tokenizer(tmp_path, pad)
    ours = ClipTokenizer.from_dir(folder)
    np.testing.assert_array_equal(ours(EDGE_CASES), _reference(folder, EDGE_CASES))
    assert len(ours.vocab) == clip_fixtures.TINY_VOCAB_LEN
    assert ours.encode("the cat and the dog")[:3] == [
        ours.vocab["the</w>"],
        ours.vocab["cat</w>"],
        ours.vocab["and</w>"],
    ]
    cfg = clip_fixtures.tiny_clip_config()
    assert (ours.bos_id, ours.eos_id) == (cfg["bos_token_id"], cfg["eos_token_id"])
    assert max(ours.vocab.values()) < cfg["vocab_size"]


def test_save_round_trip(tmp_path):
    folder = clip_fixtures.write_clip_tokenizer(tmp_path / "a", "!")
    ClipTokenizer.from_dir(folder).save(tmp_path / "b")
    again = ClipTokenizer.from_dir(tmp_path / "b")
    np.testing.assert_array_equal(again(EDGE_CASES), _reference(folder, EDGE_CASES))
    np.testing.assert_array_equal(_reference(tmp_path / "b", EDGE_CASES), again(EDGE_CASES))


def test_optional_files_and_saved_transformers_format(tmp_path):
    folder = clip_fixtures.write_clip_tokenizer(tmp_path / "a")
    (folder / "tokenizer_config.json").unlink()
    (folder / "special_tokens_map.json").unlink()
    ours = ClipTokenizer.from_dir(folder)  # CLIP's defaults, 77 ids
    np.testing.assert_array_equal(ours(EDGE_CASES), _reference(folder, EDGE_CASES))
    # What transformers 5's save_pretrained writes: tokenizer.json alone (vocab and merges
    # inside), for CLIP's padding and for SD 2's "!" padding.
    for pad in (None, "!"):
        source = clip_fixtures.write_clip_tokenizer(tmp_path / f"src{pad}", **_pad_kwargs(pad))
        saved = tmp_path / f"saved{pad}"
        transformers.CLIPTokenizer.from_pretrained(source).save_pretrained(saved)
        assert (saved / "tokenizer.json").is_file() and not (saved / "vocab.json").is_file()
        ours = ClipTokenizer.from_dir(saved)
        np.testing.assert_array_equal(ours(EDGE_CASES), _reference(saved, EDGE_CASES))
        assert ours.pad_id == (0 if pad == "!" else ours.eos_id)


def _pad_kwargs(pad: str | None) -> dict:
    return {} if pad is None else {"pad_token": pad}


def test_missing_file_is_one_line(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"merges\.txt is missing; .*tokenizer/ folder"):
        ClipTokenizer.from_dir(tmp_path)
    try:
        ClipTokenizer.from_dir(tmp_path)
    except FileNotFoundError as e:
        assert "\n" not in str(e)
