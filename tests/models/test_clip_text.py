"""`ClipTextTransformer` against transformers' `CLIPTextModel` (random weights, tiny config).

The reference is an independent implementation (PyTorch): last_hidden_state and pooler_output
for skip 0, and final_layer_norm(hidden_states[-2]) for skip 1 (diffusers' clip_skip=1), with
quick_gelu (SD v1) and exact gelu (OpenCLIP) activations. The weights go through
`params_from_hf_state_dict` (a renaming and transpose, checked by name and shape).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from ldm_jax.interop.clip_weights import params_from_hf_state_dict
from ldm_jax.models.clip_text import (
    CLIP_VIT_L14,
    OPENCLIP_VIT_H14,
    ClipTextConfig,
    ClipTextTransformer,
)
from tests import clip_fixtures

TOL = 1e-5


def _ids(config: dict, batch: int = 3, length: int = 77, seed: int = 0) -> np.ndarray:
    """Random ids (below bos) with bos first, eos at varying positions and eos padding after."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, config["bos_token_id"], (batch, length))
    ids[:, 0] = config["bos_token_id"]
    for row, end in zip(ids, (5, length - 1, length // 2), strict=False):
        row[end:] = config["eos_token_id"]
    return ids.astype(np.int32)


def _ours(model_cfg: dict, ref: transformers.CLIPTextModel):
    config = ClipTextConfig.from_hf(model_cfg)
    tensors = {k: v.numpy() for k, v in ref.state_dict().items()}
    params = params_from_hf_state_dict(tensors, config)
    apply = jax.jit(
        lambda p, ids, skip: ClipTextTransformer(config).apply({"params": p}, ids, skip),
        static_argnums=2,
    )
    return params, apply


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
@pytest.mark.parametrize("length", [77, 20])
def test_matches_transformers(act, length):
    cfg = clip_fixtures.tiny_clip_config(act)
    ref = clip_fixtures.random_clip_text_model(cfg, seed=1)
    params, apply = _ours(cfg, ref)
    ids = _ids(cfg, length=length)
    with torch.no_grad():
        out = ref(torch.from_numpy(ids).long(), output_hidden_states=True)
        penultimate = ref.final_layer_norm(out.hidden_states[-2]).numpy()
    eos = np.argmax(ids == cfg["eos_token_id"], axis=1)

    last = apply(params, ids, 0)
    np.testing.assert_allclose(last.hidden, out.last_hidden_state.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(last.pooled, out.pooler_output.numpy(), atol=TOL, rtol=0)
    skip1 = apply(params, ids, 1)
    np.testing.assert_allclose(skip1.hidden, penultimate, atol=TOL, rtol=0)
    np.testing.assert_allclose(skip1.pooled, penultimate[np.arange(len(ids)), eos], atol=TOL)
    assert last.hidden.dtype == jnp.float32 and last.hidden.shape == (3, length, 32)


def test_legacy_eos_id_pools_at_the_largest_id():
    """SD v1's config.json says eos_token_id 2 (pre transformers PR #24773): pool at argmax(ids)."""
    cfg = {**clip_fixtures.tiny_clip_config(), "eos_token_id": 2}
    ref = clip_fixtures.random_clip_text_model(cfg, seed=2)
    params, apply = _ours(cfg, ref)
    ids = _ids(clip_fixtures.tiny_clip_config(), length=16)
    ids[0, 3] = 999  # the largest id, before the real end-of-text token
    with torch.no_grad():
        pooled = ref(torch.from_numpy(ids).long()).pooler_output.numpy()
    np.testing.assert_allclose(apply(params, ids, 0).pooled, pooled, atol=TOL, rtol=0)


def test_bfloat16_compute_stays_close():
    cfg = clip_fixtures.tiny_clip_config()
    ref = clip_fixtures.random_clip_text_model(cfg, seed=3)
    config = ClipTextConfig.from_hf(cfg)
    params = params_from_hf_state_dict({k: v.numpy() for k, v in ref.state_dict().items()}, config)
    ids = _ids(cfg)
    full = ClipTextTransformer(config).apply({"params": params}, ids).hidden
    half = ClipTextTransformer(config, dtype=jnp.bfloat16).apply({"params": params}, ids).hidden
    assert half.dtype == jnp.float32
    assert float(jnp.abs(half - full).max()) < 0.1


def test_parameter_names_and_logical_axes():
    config = ClipTextConfig.from_hf(clip_fixtures.tiny_clip_config())
    boxed = ClipTextTransformer(config).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    specs = nn_partition_specs(boxed["params"])
    assert specs["token_embedding"]["embedding"] == ("vocab", "embed")
    assert specs["layers_2"]["self_attn"]["q_proj"]["kernel"] == ("embed", "heads")
    assert specs["layers_2"]["self_attn"]["out_proj"]["kernel"] == ("heads", "embed")
    assert specs["layers_0"]["mlp"]["fc1"]["kernel"] == ("embed", "mlp")
    assert specs["layers_0"]["mlp"]["fc2"]["kernel"] == ("mlp", "embed")
    assert set(specs["layers_0"]) == {"layer_norm1", "self_attn", "layer_norm2", "mlp"}
    assert set(specs) == {
        "token_embedding",
        "position_embedding",
        "final_layer_norm",
        *(f"layers_{i}" for i in range(3)),
    }


def nn_partition_specs(tree):
    import flax.linen as nn

    return jax.tree_util.tree_map(
        lambda s: tuple(s), nn.get_partition_spec(tree), is_leaf=lambda x: x is None
    )


@pytest.mark.parametrize("config", [CLIP_VIT_L14, OPENCLIP_VIT_H14], ids=["vit_l14", "vit_h14"])
def test_full_size_parameter_count_matches_transformers(config):
    """eval_shape of our tree vs transformers' CLIPTextModel of `to_hf()` built on the meta
    device (123.06M for SD v1's text encoder, 352.98M for SD v2's)."""
    shapes = jax.eval_shape(
        ClipTextTransformer(config).init, jax.random.key(0), jnp.zeros((1, 77), jnp.int32)
    )
    ours = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
    with torch.device("meta"):
        ref = transformers.CLIPTextModel(transformers.CLIPTextConfig(**config.to_hf()))
    assert ours == sum(p.numel() for p in ref.parameters())
    assert ours == {768: 123_060_480, 1024: 352_984_064}[config.hidden_size]


def test_config_from_and_to_hf():
    hf = transformers.CLIPTextConfig(**clip_fixtures.tiny_clip_config("gelu")).to_dict()
    config = ClipTextConfig.from_hf(hf)
    assert (config.hidden_size, config.num_layers, config.num_heads) == (32, 3, 4)
    assert config.hidden_act == "gelu" and config.intermediate_size == 64
    assert ClipTextConfig.from_hf(config.to_hf()) == config
    reloaded = transformers.CLIPTextConfig(**config.to_hf())
    assert (reloaded.num_hidden_layers, reloaded.hidden_act) == (3, "gelu")
    # A full CLIPModel config is read through its text_config.
    full = {"model_type": "clip", "text_config": hf, "vision_config": {}}
    assert ClipTextConfig.from_hf(full) == config
    # Missing fields take transformers' defaults.
    assert ClipTextConfig.from_hf({}).hidden_size == 512


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"hidden_act": "gelu_new"}, "hidden_act 'gelu_new' is not supported"),
        ({"model_type": "clip_vision_model"}, "not a CLIP text model"),
        ({"hidden_size": 30, "num_attention_heads": 4}, "not divisible"),
    ],
)
def test_config_from_hf_rejects_unsupported(bad, match):
    with pytest.raises(ValueError, match=match):
        ClipTextConfig.from_hf({**clip_fixtures.tiny_clip_config(), **bad})


def test_input_checks():
    config = ClipTextConfig.from_hf(clip_fixtures.tiny_clip_config())
    model = ClipTextTransformer(config)
    with pytest.raises(ValueError, match="78 tokens > max_positions 77"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 78), jnp.int32))
    with pytest.raises(ValueError, match="skip_last_layers=3"):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32), 3))
