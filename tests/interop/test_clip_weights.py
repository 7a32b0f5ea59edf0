"""CLIP text weights: transformers folders both ways, SD v1 prefixes, OpenCLIP (SD v2) layout.

References: transformers' `CLIPTextModel` (save_pretrained / from_pretrained) and open_clip's own
`TextTransformer` run as the reference `FrozenOpenCLIPEmbedder` runs it (resblocks except the
last `layer_idx`, then ln_final).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from jax.tree_util import tree_leaves as leaves

from ldm_jax.interop import clip_weights
from ldm_jax.interop.tensors import WeightMismatchError
from ldm_jax.models.clip_text import ClipTextTransformer
from tests import clip_fixtures

TOL = 1e-5


def _ids(length: int = 77) -> np.ndarray:
    vocab = clip_fixtures.tiny_vocab()
    ids = np.random.default_rng(0).integers(0, 500, (2, length))
    ids[:, 0] = vocab[clip_fixtures.BOS]
    ids[0, 9:] = ids[1, -1] = vocab[clip_fixtures.EOS]
    return ids.astype(np.int32)


def _reference(model, ids):
    with torch.no_grad():
        return model(torch.from_numpy(ids).long()).last_hidden_state.numpy()


def test_load_save_pretrained_folder_and_round_trip(tmp_path):
    clip_fixtures.save_tiny_clip_text(tmp_path / "te", seed=4, hidden_act="gelu")
    reference = transformers.CLIPTextModel.from_pretrained(tmp_path / "te").eval()
    config, params = clip_weights.load_clip_text(tmp_path / "te")
    assert config.hidden_act == "gelu" and config.num_layers == 3
    ids = _ids()
    ours = ClipTextTransformer(config).apply({"params": params}, ids).hidden
    np.testing.assert_allclose(ours, _reference(reference, ids), atol=TOL, rtol=0)

    clip_weights.save_clip_text(config, params, tmp_path / "out")
    reloaded = transformers.CLIPTextModel.from_pretrained(tmp_path / "out").eval()
    np.testing.assert_array_equal(_reference(reloaded, ids), _reference(reference, ids))
    config2, params2 = clip_weights.load_clip_text(tmp_path / "out")
    assert config2 == config
    for a, b in zip(leaves(params), leaves(params2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_pytorch_model_bin_and_sd1_single_file_prefix(tmp_path):
    model = clip_fixtures.random_clip_text_model(seed=5)
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    state = {f"text_model.{k}": v for k, v in model.state_dict().items()}  # transformers 4 names
    torch.save(state, tmp_path / "pytorch_model.bin")
    config, params = clip_weights.load_clip_text(tmp_path)
    ids = _ids()
    ours = ClipTextTransformer(config).apply({"params": params}, ids).hidden
    np.testing.assert_allclose(ours, _reference(model, ids), atol=TOL, rtol=0)

    single_file = {f"cond_stage_model.transformer.{k}": v.numpy() for k, v in state.items()}
    single_file["model.diffusion_model.out.0.weight"] = np.zeros(3, np.float32)
    single_file["cond_stage_model.transformer.text_model.embeddings.position_ids"] = np.arange(77)
    from_single = clip_weights.params_from_hf_state_dict(
        single_file, config, prefix=clip_weights.SD1_PREFIX
    )
    ours2 = ClipTextTransformer(config).apply({"params": from_single}, ids).hidden
    np.testing.assert_array_equal(ours2, ours)


def test_mismatches_are_named(tmp_path):
    model = clip_fixtures.random_clip_text_model()
    config = clip_weights.ClipTextConfig.from_hf(clip_fixtures.tiny_clip_config())
    tensors = {k: v.numpy() for k, v in model.state_dict().items()}
    del tensors["encoder.layers.1.mlp.fc2.bias"]
    tensors["encoder.layers.0.extra.weight"] = np.zeros(2, np.float32)
    tensors["final_layer_norm.weight"] = np.zeros(31, np.float32)
    with pytest.raises(WeightMismatchError) as err:
        clip_weights.params_from_hf_state_dict(tensors, config)
    for name in ("encoder.layers.1.mlp.fc2.bias", "encoder.layers.0.extra.weight"):
        assert name in str(err.value)
    assert "'final_layer_norm.weight' has shape (31,)" in str(err.value)


def test_missing_files_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json is missing") as err:
        clip_weights.load_clip_text(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="has none of model.safetensors"):
        clip_weights.load_clip_text(tmp_path)


def _open_clip_reference(tower, ids: np.ndarray, layer_idx: int) -> np.ndarray:
    """FrozenOpenCLIPEmbedder.encode_with_transformer with open_clip's modules."""
    with torch.no_grad():
        text = torch.from_numpy(ids).long()
        x = tower.token_embedding(text) + tower.positional_embedding
        if not tower.transformer.batch_first:
            x = x.permute(1, 0, 2)
        blocks = tower.transformer.resblocks
        for block in list(blocks)[: len(blocks) - layer_idx]:
            x = block(x, attn_mask=tower.attn_mask)
        if not tower.transformer.batch_first:
            x = x.permute(1, 0, 2)
        return tower.ln_final(x).numpy()


def test_openclip_text_tower_penultimate_matches_frozen_openclip_embedder():
    tower = clip_fixtures.random_open_clip_text_tower(width=32, layers=3, heads=4, seed=6)
    prefix = clip_weights.OPENCLIP_PREFIX
    tensors = {prefix + k: v.numpy() for k, v in tower.state_dict().items()}
    tensors[prefix + "logit_scale"] = np.ones((), np.float32)
    tensors["model.diffusion_model.time_embed.0.weight"] = np.zeros(2, np.float32)

    config = clip_weights.config_from_openclip_state_dict(tensors, num_heads=4)
    assert (config.hidden_size, config.num_layers, config.intermediate_size) == (32, 3, 128)
    assert (config.vocab_size, config.hidden_act, config.pad_token_id) == (1000, "gelu", 0)
    params = clip_weights.params_from_openclip_state_dict(tensors, config)
    ids = np.random.default_rng(1).integers(0, 1000, (2, 77)).astype(np.int32)
    model = ClipTextTransformer(config)
    for skip in (1, 0):  # SD v2's layer="penultimate", then "last"
        ours = model.apply({"params": params}, ids, skip).hidden
        np.testing.assert_allclose(ours, _open_clip_reference(tower, ids, skip), atol=TOL, rtol=0)


def test_openclip_defaults_and_errors():
    tower = clip_fixtures.random_open_clip_text_tower(width=128, layers=1, heads=2)
    tensors = {"cond_stage_model.model." + k: v.numpy() for k, v in tower.state_dict().items()}
    assert clip_weights.config_from_openclip_state_dict(tensors).num_heads == 2  # width / 64
    config = clip_weights.config_from_openclip_state_dict(tensors)
    bad = dict(tensors)
    bad["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias"] = np.zeros(10)
    with pytest.raises(WeightMismatchError, match="not 3 stacked"):
        clip_weights.params_from_openclip_state_dict(bad, config)
    with pytest.raises(WeightMismatchError, match="token_embedding.weight is missing"):
        clip_weights.config_from_openclip_state_dict(tensors, prefix="first_stage_model.")
