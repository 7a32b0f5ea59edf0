"""The paper's text-conditioned checkpoints: a `BERTEmbedder` cond stage in a real `.ckpt`.

The reference names (x-transformers `TransformerWrapper` inside `BERTEmbedder`) are written by a
test-side table, and the forward pass is checked against a numpy re-implementation of the
reference encoder (pre-norm attention/feed-forward blocks, final LayerNorm).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from ldm_jax import interop
from ldm_jax.models.text_encoder import BERTEmbedder
from tests.interop.reference import torch
from tests.interop.test_compvis import UNET, _checkpoint

N_LAYER, VOCAB, MAX_LEN = 2, 40, 12
N_EMBED = UNET["cross_attention_dim"]  # the U-Net's context width
HEADS, DIM_HEAD = 8, 64  # the reference Encoder's defaults
WORDS = ["a", "painting", "of", "fox", "the", "moon", "##s", "red"]


def _random_params(seed: int) -> dict:
    """Our BERTEmbedder's parameters with every leaf random (so biases/scales are checked)."""
    bert = BERTEmbedder(N_EMBED, N_LAYER, vocab_size=VOCAB, max_seq_len=MAX_LEN)
    variables = bert.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))
    shapes = nn.unbox(variables)["params"]
    leaves, tree = jax.tree_util.tree_flatten(shapes)
    rng = np.random.default_rng(seed)
    new = []
    for leaf in leaves:
        centre = 1.0 if leaf.ndim == 1 and leaf.shape[0] == N_EMBED else 0.0
        new.append((centre + 0.2 * rng.standard_normal(leaf.shape)).astype(np.float32))
    return jax.tree_util.tree_unflatten(tree, new)


def _to_reference(params: dict) -> dict[str, np.ndarray]:
    """Our parameters -> the reference `cond_stage_model.*` names and PyTorch layouts."""
    t, pre = params["transformer"], "cond_stage_model.transformer."
    sd = {
        pre + "token_emb.weight": t["token_emb"]["embedding"],
        pre + "pos_emb.emb.weight": t["pos_emb"]["emb"]["embedding"],
        pre + "norm.weight": t["norm"]["scale"],
        pre + "norm.bias": t["norm"]["bias"],
        pre + "to_logits.weight": t["to_logits"]["kernel"].T,
        pre + "to_logits.bias": t["to_logits"]["bias"],
    }
    layers = t["attn_layers"]
    for i in range(2 * N_LAYER):
        lp = f"{pre}attn_layers.layers.{i}."
        sd[lp + "0.weight"] = layers[f"layers_{i}_0"]["scale"]
        sd[lp + "0.bias"] = layers[f"layers_{i}_0"]["bias"]
        block = layers[f"layers_{i}_1"]
        if i % 2 == 0:  # attention
            for name in ("to_q", "to_k", "to_v"):
                sd[f"{lp}1.{name}.weight"] = block[name]["kernel"].T
            sd[lp + "1.to_out.weight"] = block["to_out"]["kernel"].T
            sd[lp + "1.to_out.bias"] = block["to_out"]["bias"]
        else:  # feed-forward: Sequential(Sequential(Linear, GELU), Dropout, Linear)
            sd[lp + "1.net.0.0.weight"] = block["net_0_0"]["kernel"].T
            sd[lp + "1.net.0.0.bias"] = block["net_0_0"]["bias"]
            sd[lp + "1.net.2.weight"] = block["net_2"]["kernel"].T
            sd[lp + "1.net.2.bias"] = block["net_2"]["bias"]
    assert len(sd) == len(jax.tree_util.tree_leaves(params))
    return {k: np.ascontiguousarray(np.asarray(v)) for k, v in sd.items()}


def _numpy_reference(sd: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    """The reference BERTEmbedder forward (float64) from the reference state dict."""
    g = lambda name: sd["cond_stage_model.transformer." + name].astype(np.float64)
    erf = np.vectorize(math.erf)

    def layer_norm(x, prefix):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * g(prefix + "weight") + g(prefix + "bias")

    x = g("token_emb.weight")[ids] + g("pos_emb.emb.weight")[: ids.shape[1]][None]
    b, n, _ = x.shape
    for i in range(2 * N_LAYER):
        lp = f"attn_layers.layers.{i}."
        h = layer_norm(x, lp + "0.")
        if i % 2 == 0:
            q, k, v = (
                (h @ g(f"{lp}1.{m}.weight").T).reshape(b, n, HEADS, DIM_HEAD).transpose(0, 2, 1, 3)
                for m in ("to_q", "to_k", "to_v")
            )
            dots = q @ k.transpose(0, 1, 3, 2) * DIM_HEAD**-0.5
            attn = np.exp(dots - dots.max(-1, keepdims=True))
            attn /= attn.sum(-1, keepdims=True)
            out = (attn @ v).transpose(0, 2, 1, 3).reshape(b, n, HEADS * DIM_HEAD)
            out = out @ g(lp + "1.to_out.weight").T + g(lp + "1.to_out.bias")
        else:
            out = h @ g(lp + "1.net.0.0.weight").T + g(lp + "1.net.0.0.bias")
            out = 0.5 * out * (1 + erf(out / math.sqrt(2)))
            out = out @ g(lp + "1.net.2.weight").T + g(lp + "1.net.2.bias")
        x = x + out
    return layer_norm(x, "norm.")


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory):
    """config.yaml + model.ckpt (KL first stage, U-Net, BERTEmbedder) and a vocab.txt."""
    tmp = tmp_path_factory.mktemp("text")
    cfg, ckpt, *_ = _checkpoint(tmp, "kl")
    sd = torch.load(ckpt)["state_dict"]
    del sd["cond_stage_model.embedding.weight"]
    params = _random_params(3)
    ref_sd = _to_reference(params)
    sd.update({k: torch.from_numpy(v.copy()) for k, v in ref_sd.items()})
    torch.save({"state_dict": sd, "global_step": 1}, ckpt)
    with open(cfg) as f:
        config = yaml.safe_load(f)
    config["model"]["params"]["cond_stage_config"] = {
        "target": "ldm.modules.encoders.modules.BERTEmbedder",
        "params": {
            "n_embed": N_EMBED,
            "n_layer": N_LAYER,
            "vocab_size": VOCAB,
            "max_seq_len": MAX_LEN,
        },
    }
    with open(cfg, "w") as f:
        yaml.safe_dump(config, f)
    vocab = tmp / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS]) + "\n")
    return cfg, ckpt, str(vocab), params, ref_sd


def test_text_cond_stage_round_trips_and_matches_reference(text_checkpoint):
    cfg, ckpt, vocab, params, ref_sd = text_checkpoint
    ldm = interop.load_compvis(cfg, ckpt, vocab=vocab)
    assert isinstance(ldm.cond_stage, BERTEmbedder)
    # (a) every tensor round-trips exactly.
    got = jax.tree_util.tree_leaves_with_path(ldm.cond_stage_params)
    want = dict(jax.tree_util.tree_leaves_with_path(params))
    assert len(got) == len(want)
    for path, leaf in got:
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(want[path]), str(path))

    ids = np.random.default_rng(0).integers(0, VOCAB, (2, MAX_LEN)).astype(np.int32)
    ctx = np.asarray(jax.jit(ldm.condition)(ids))
    assert ctx.shape == (2, MAX_LEN, N_EMBED)
    # (b) the same as our BERTEmbedder with the original parameters.
    ours = ldm.cond_stage.apply({"params": params}, ids)
    err_ours = float(np.abs(ctx - np.asarray(ours)).max())
    # An independent numpy forward of the reference encoder.
    err_ref = float(np.abs(ctx - _numpy_reference(ref_sd, ids)).max())
    print(f"text cond stage: vs BERTEmbedder {err_ours:.2e}, vs numpy reference {err_ref:.2e}")
    assert err_ours < 1e-5 and err_ref < 1e-5  # jit vs eager: float32 rounding only

    # (c) eps with token ids, precomputed context and captions agree.
    z = np.random.default_rng(1).standard_normal((2, 8, 8, 4)).astype(np.float32)
    t = np.array([5, 600], np.int32)
    eps = np.asarray(jax.jit(ldm.eps)(z, t, ids))
    assert eps.shape == z.shape and np.isfinite(eps).all()
    np.testing.assert_allclose(eps, jax.jit(ldm.eps)(z, t, ctx), atol=1e-6)
    captions = ["A painting of the moons", "red fox"]
    tokens = ldm.tokenize(captions)
    assert tokens.shape == (2, MAX_LEN) and tokens[0, :6].tolist() == [2, 4, 5, 6, 8, 9]
    assert ldm.tokenizer.decode(tokens[0]) == "a painting of the moons"
    ctx_text = ldm.condition(captions)  # strings cannot pass through jit
    np.testing.assert_allclose(ctx_text, jax.jit(ldm.condition)(tokens), atol=1e-5)
    eps_text = jax.jit(ldm.eps)(z, t, ctx_text)
    np.testing.assert_allclose(eps_text, jax.jit(ldm.eps)(z, t, tokens), atol=1e-5)

    no_vocab = interop.load_compvis(cfg, ckpt)
    with pytest.raises(ValueError, match="vocab"):
        no_vocab.condition(captions)


def test_text_cond_stage_names_missing_and_misshaped_tensors(text_checkpoint, tmp_path):
    cfg, ckpt, *_ = text_checkpoint
    sd = torch.load(ckpt)["state_dict"]
    pre = "cond_stage_model.transformer."
    del sd[pre + "attn_layers.layers.3.1.net.2.weight"]
    sd[pre + "attn_layers.layers.0.1.to_q.weight"] = torch.zeros(3, N_EMBED)
    sd[pre + "memory_tokens"] = torch.zeros(1, N_EMBED)
    torch.save({"state_dict": sd}, tmp_path / "broken.ckpt")
    with pytest.raises(interop.WeightMismatchError) as e:
        interop.load_compvis(cfg, str(tmp_path / "broken.ckpt"))
    msg = str(e.value)
    for name in ("layers.3.1.net.2.weight", "layers.0.1.to_q.weight", "memory_tokens"):
        assert name in msg, msg


def test_text_cond_stage_refuses_mismatched_width_and_a_workdir_without_vocab(
    text_checkpoint, tmp_path
):
    from ldm_jax.interop.diffusers_config import UnsupportedConfigError
    from ldm_jax.workdir.writer import write_compvis_workdir

    cfg, ckpt, *_ = text_checkpoint
    with pytest.raises(UnsupportedConfigError, match="--vocab vocab.txt"):
        write_compvis_workdir(interop.load_compvis(cfg, ckpt), str(tmp_path / "wd"))
    with open(cfg) as f:
        config = yaml.safe_load(f)
    config["model"]["params"]["cond_stage_config"]["params"]["n_embed"] = N_EMBED + 8
    with open(tmp_path / "wide.yaml", "w") as f:
        yaml.safe_dump(config, f)
    with pytest.raises(UnsupportedConfigError, match="context_dim"):
        interop.load_compvis(str(tmp_path / "wide.yaml"), ckpt)
