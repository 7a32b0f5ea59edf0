"""CLIP text encoder weights: transformers/diffusers folders and SD single files, both ways.

Two layouts map onto `models.clip_text.ClipTextTransformer`:

* transformers' `CLIPTextModel` (diffusers' `text_encoder/`; SD v1 single files under
  `cond_stage_model.transformer.text_model.`): the same module names, `weight` for
  `kernel`/`scale`/`embedding`, Linear weights transposed. The `position_ids` buffer and
  anything outside the prefix (a `CLIPTextModelWithProjection`'s `text_projection`) are ignored.
* OpenCLIP's text tower as SD v2 single files store it (`cond_stage_model.model.`):
  `token_embedding.weight`, `positional_embedding`, `transformer.resblocks.{i}.{ln_1, attn.
  in_proj_weight/in_proj_bias (q, k, v stacked), attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}`,
  `ln_final`. `text_projection`, `logit_scale` (and a vision tower, if present) are ignored.

Every parameter must be present with its shape and every other tensor under the prefix must be
a known ignorable one, or `WeightMismatchError` lists them. `.bin` files are read with the
restricted unpickler of `torch_pickle` (no code from the file runs).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import numpy as np
from safetensors.numpy import save_file

from ldm_jax.interop import torch_pickle
from ldm_jax.interop.safetensors_file import read_safetensors
from ldm_jax.interop.tensors import (
    FlaxPath,
    WeightMismatchError,
    abstract_params,
    assemble,
    flax_to_torch,
)
from ldm_jax.models.bpe_tokenizer import ClipTokenizer
from ldm_jax.models.clip_encoder import ClipPromptEncoder
from ldm_jax.models.clip_text import ClipTextConfig, ClipTextTransformer

HF_PREFIX = "text_model."
SD1_PREFIX = "cond_stage_model.transformer.text_model."
OPENCLIP_PREFIX = "cond_stage_model.model."
CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_LEAVES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}
_OPENCLIP_IGNORED = re.compile(r"(text_projection|logit_scale|logit_bias|attn_mask|visual\..*)")
_OPENCLIP_MODULES = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "out_proj": "attn.out_proj",
    "fc1": "mlp.c_fc",
    "fc2": "mlp.c_proj",
}


def abstract_clip_params(config: ClipTextConfig) -> dict:
    """The `ClipTextTransformer` parameter tree of `config` as shapes (nothing computed)."""
    return abstract_params(ClipTextTransformer(config), np.zeros((1, 1), np.int32))


def hf_name(path: FlaxPath) -> str:
    """Our parameter path -> transformers' name without prefix, e.g. ("layers_0", "self_attn",
    "q_proj", "kernel") -> "encoder.layers.0.self_attn.q_proj.weight"."""
    *modules, leaf = path
    head = modules[0]
    if head in ("token_embedding", "position_embedding"):
        modules = ["embeddings", head]
    elif head.startswith("layers_"):
        modules = ["encoder", "layers", head[len("layers_") :], *modules[1:]]
    return ".".join([*modules, _LEAVES[leaf]])


def openclip_name(path: FlaxPath) -> str:
    """Our parameter path -> OpenCLIP's name without prefix; q/k/v get the names of their thirds
    of `in_proj_weight`/`in_proj_bias` (`attn.q_proj.weight`, ...), made by `_split_qkv`."""
    *modules, leaf = path
    head = modules[0]
    if head == "token_embedding":
        return "token_embedding.weight"
    if head == "position_embedding":
        return "positional_embedding"
    if head == "final_layer_norm":
        return f"ln_final.{_LEAVES[leaf]}"
    block = f"transformer.resblocks.{head[len('layers_') :]}"
    module = modules[-1]
    if module in ("q_proj", "k_proj", "v_proj"):
        return f"{block}.attn.{module}.{_LEAVES[leaf]}"
    return f"{block}.{_OPENCLIP_MODULES[module]}.{_LEAVES[leaf]}"


def _under(tensors: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def params_from_hf_state_dict(
    tensors: Mapping[str, np.ndarray], config: ClipTextConfig, prefix: str | None = None
) -> dict:
    """Maps a transformers `CLIPTextModel` state dict onto the `ClipTextTransformer` tree.

    Args:
      tensors: name -> array (a model.safetensors, or a whole SD v1 checkpoint).
      config: the architecture the tensors must fit.
      prefix: the names' prefix; tensors outside it are ignored. Default: "text_model." when
        some names carry it (transformers 4's files, diffusers' SD repos), else none
        (transformers 5 saves `CLIPTextModel` without it). SD v1 single files:
        "cond_stage_model.transformer.text_model.".

    Returns:
      The nested float32 parameter dict.

    Raises:
      WeightMismatchError: missing, unexpected or mis-shaped tensors, by name.
    """
    if prefix is None:
        prefix = HF_PREFIX if any(k.startswith(HF_PREFIX) for k in tensors) else ""
    return assemble(
        abstract_clip_params(config),
        _under(tensors, prefix),
        hf_name,
        ignore=lambda name: name == "embeddings.position_ids",
        source=f"CLIP text encoder state dict (prefix {prefix!r})",
    )


def _flat_params(params: Mapping[str, Any]) -> dict[FlaxPath, np.ndarray]:
    params = flax.core.unfreeze(nn.unbox(params))
    return flax.traverse_util.flatten_dict(params)


def hf_state_dict_from_params(
    params: Mapping[str, Any], config: ClipTextConfig
) -> dict[str, np.ndarray]:
    """The transformers `CLIPTextModel` state dict ("text_model." names, float32) of `params`."""
    abstract = flax.traverse_util.flatten_dict(abstract_clip_params(config))
    flat = _flat_params(params)
    if set(flat) != set(abstract):
        raise WeightMismatchError(
            "hf_state_dict_from_params: the parameter tree does not fit the config; missing "
            f"{sorted(set(abstract) - set(flat))}, extra {sorted(set(flat) - set(abstract))}."
        )
    return {
        HF_PREFIX + hf_name(path): np.ascontiguousarray(flax_to_torch(np.asarray(v), path))
        for path, v in flat.items()
    }


def save_clip_text(
    config: ClipTextConfig, params: Mapping[str, Any], directory: str | os.PathLike
) -> pathlib.Path:
    """Writes config.json + model.safetensors, a folder `transformers.CLIPTextModel.
    from_pretrained` (and `load_clip_text`) loads. Returns the folder."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_hf(), indent=2) + "\n")
    save_file(
        hf_state_dict_from_params(params, config),
        str(directory / WEIGHT_FILES[0]),
        metadata={"format": "pt"},
    )
    return directory


def _read_weights(directory: pathlib.Path) -> dict[str, np.ndarray]:
    for name in WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            tensors: dict[str, np.ndarray] = {}
            for shard in shards:
                tensors.update(read_safetensors(directory / shard))
            return tensors
        if name.endswith(".bin"):
            return torch_pickle.load_state_dict(str(path))
        return read_safetensors(path)
    raise FileNotFoundError(
        f"CLIP text encoder: {directory} has none of {', '.join(WEIGHT_FILES)}; expected a "
        "transformers/diffusers text_encoder/ folder (config.json and weights)."
    )


def load_clip_text(directory: str | os.PathLike) -> tuple[ClipTextConfig, dict]:
    """Reads a transformers/diffusers `text_encoder/` folder: (config, float32 params).

    Raises:
      FileNotFoundError: no config.json or no weights file (one line).
      WeightMismatchError: the weights do not fit the config.
    """
    directory = pathlib.Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"CLIP text encoder: {directory / CONFIG_FILE} is missing; expected a "
            "transformers/diffusers text_encoder/ folder (config.json and model.safetensors)."
        )
    config = ClipTextConfig.from_hf(json.loads((directory / CONFIG_FILE).read_text()))
    return config, params_from_hf_state_dict(_read_weights(directory), config)


def config_from_openclip_state_dict(
    tensors: Mapping[str, np.ndarray],
    prefix: str = OPENCLIP_PREFIX,
    num_heads: int | None = None,
) -> ClipTextConfig:
    """The architecture of an OpenCLIP text tower, read from its tensors' shapes.

    The head count is not in the shapes: OpenCLIP's text towers use heads of width 64 (ViT-H/14:
    1024 / 16), the default here; pass `num_heads` otherwise. Activation: exact gelu; pad id 0
    (SD v2's "!").

    Raises:
      WeightMismatchError: the tower's tensors are not found under `prefix`.
    """
    t = _under(tensors, prefix)
    for name in ("token_embedding.weight", "positional_embedding"):
        if name not in t:
            raise WeightMismatchError(
                f"OpenCLIP text tower: {prefix}{name} is missing (is this an SD 2 checkpoint?)."
            )
    vocab, width = t["token_embedding.weight"].shape
    blocks = {int(m.group(1)) for k in t if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))}
    if not blocks:
        raise WeightMismatchError(f"OpenCLIP text tower: no {prefix}transformer.resblocks.*.")
    intermediate = t["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    return ClipTextConfig(
        vocab_size=int(vocab),
        hidden_size=int(width),
        intermediate_size=int(intermediate),
        num_layers=max(blocks) + 1,
        num_heads=num_heads or int(width) // 64,
        max_positions=int(t["positional_embedding"].shape[0]),
        hidden_act="gelu",
        pad_token_id=0,
    )


def _split_qkv(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Replaces each fused `attn.in_proj_{weight,bias}` [3D, ...] by q/k/v thirds."""
    out = {}
    for name, value in tensors.items():
        m = re.fullmatch(r"(transformer\.resblocks\.\d+\.attn)\.in_proj_(weight|bias)", name)
        if m is None:
            out[name] = value
            continue
        if value.shape[0] % 3:
            raise WeightMismatchError(
                f"OpenCLIP text tower: {name} has shape {tuple(value.shape)}, not 3 stacked "
                "q/k/v projections."
            )
        for part, third in zip(("q_proj", "k_proj", "v_proj"), np.split(value, 3), strict=True):
            out[f"{m.group(1)}.{part}.{m.group(2)}"] = third
    return out


def params_from_openclip_state_dict(
    tensors: Mapping[str, np.ndarray], config: ClipTextConfig, prefix: str = OPENCLIP_PREFIX
) -> dict:
    """Maps OpenCLIP's text tower (SD v2 single-file layout) onto the `ClipTextTransformer` tree.

    Raises:
      WeightMismatchError: missing, unexpected or mis-shaped tensors, by name.
    """
    return assemble(
        abstract_clip_params(config),
        _split_qkv(_under(tensors, prefix)),
        openclip_name,
        ignore=lambda name: _OPENCLIP_IGNORED.fullmatch(name) is not None,
        source=f"OpenCLIP text tower (prefix {prefix!r})",
    )


@functools.lru_cache(maxsize=4)
def clip_prompt_encoder(
    text_encoder_dir: str,
    tokenizer_dir: str,
    skip_last_layers: int = 0,
    max_length: int = 77,
) -> ClipPromptEncoder:
    """The process's `ClipPromptEncoder` of a diffusers model's `text_encoder/` and
    `tokenizer/` folders (built once per arguments: weights read, forward compiled lazily)."""
    config, params = load_clip_text(text_encoder_dir)
    tokenizer = ClipTokenizer.from_dir(tokenizer_dir, max_length=max_length)
    return ClipPromptEncoder(config, params, tokenizer, skip_last_layers)
