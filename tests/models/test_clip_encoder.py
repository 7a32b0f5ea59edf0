"""`ClipPromptEncoder` (through `interop.clip_weights.clip_prompt_encoder`) against transformers.

The reference is the SD pipeline's path: transformers' `CLIPTokenizer` (padding="max_length",
truncation) and `CLIPTextModel` (last_hidden_state, or final_layer_norm(hidden_states[-2]) for
clip_skip=1) on the same folders. New prompts and batch sizes reuse the compiled forward.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from ldm_jax.interop.clip_weights import clip_prompt_encoder
from ldm_jax.models.clip_encoder import padded_batch
from tests import clip_fixtures

PROMPTS = ["a photo of the cat", "the dog and the cat on the red photo", "", "Ünïcode 東京 😍!"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd")
    te = clip_fixtures.save_tiny_clip_text(root / "text_encoder", seed=7)
    tok = clip_fixtures.write_tiny_tokenizer(root / "tokenizer")
    return str(te), str(tok)


def _reference(folders, prompts, skip):
    tok = transformers.CLIPTokenizer.from_pretrained(folders[1])
    model = transformers.CLIPTextModel.from_pretrained(folders[0]).eval()
    ids = tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(ids.input_ids, output_hidden_states=True)
        if skip == 0:
            return out.last_hidden_state.numpy()
        return model.final_layer_norm(out.hidden_states[-1 - skip]).numpy()


@pytest.mark.parametrize("skip", [0, 1])
def test_matches_transformers(folders, skip):
    encoder = clip_prompt_encoder(*folders, skip_last_layers=skip)
    ours = encoder(PROMPTS)
    assert ours.shape == (4, 77, 32) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, _reference(folders, PROMPTS, skip), atol=1e-5, rtol=0)


def test_new_prompts_do_not_recompile(folders):
    encoder = clip_prompt_encoder(*folders)
    assert clip_prompt_encoder(*folders) is encoder  # cached per folders and options
    encoder(["warm up", "two", "three"])  # batch padded to 4
    compiled = encoder._forward._cache_size()
    again = encoder(["other words", "and more", "a cat"])
    one = encoder(["one"])  # batch 1: a second shape
    encoder(["x"])
    assert encoder._forward._cache_size() == compiled + 1
    np.testing.assert_allclose(one[0], encoder(["one", "b", "c"])[0], atol=1e-5, rtol=0)
    assert again.shape == (3, 77, 32)
    assert [padded_batch(n) for n in (1, 2, 3, 5, 64, 65)] == [1, 2, 4, 8, 64, 64]


def test_chunks_beyond_max_batch(folders):
    encoder = clip_prompt_encoder(*folders)
    prompts = [f"the cat number {i}" for i in range(70)]
    out = encoder(prompts)
    np.testing.assert_allclose(out[65:], encoder(prompts[65:]), atol=1e-5, rtol=0)
    np.testing.assert_allclose(out[:2], encoder(prompts[:2]), atol=1e-5, rtol=0)
    ids = encoder.tokenizer(prompts[:3])
    np.testing.assert_allclose(encoder.encode_ids(ids), out[:3], atol=1e-5, rtol=0)


def test_mismatched_tokenizer_is_refused(folders, tmp_path):
    real = clip_fixtures.write_clip_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="exceed the text encoder's vocab_size 1000"):
        clip_prompt_encoder(folders[0], str(real))
