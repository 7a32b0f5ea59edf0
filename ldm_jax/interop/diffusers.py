"""Import and export of diffusers `save_pretrained` folders (config.json + safetensors).

    unet, params = load_diffusers_unet("sd/unet")            # UNet2DConditionModel
    ae, ae_params = load_diffusers_autoencoder("sd/vae")     # AutoencoderKL or VQModel
    export_diffusers(unet, params, "out/unet", in_channels=4)

Tensors are read with the `safetensors` numpy API (no PyTorch); legacy `.bin` weights go through
the restricted unpickler of `torch_pickle`. Every parameter of the model must be present with the
right shape and every tensor of the file must be used, otherwise `WeightMismatchError` names them.
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from ldm_jax.interop import diffusers_config as dcfg
from ldm_jax.interop import diffusers_names as names
from ldm_jax.interop import unet2d_config, vq_config
from ldm_jax.interop.safetensors_file import read_safetensors
from ldm_jax.interop.tensors import (
    abstract_params,
    assemble,
    flax_path_to_compvis,
    flax_to_torch,
)
from ldm_jax.interop.torch_pickle import load_state_dict
from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.models.latent_denoiser import LatentDenoiser
from ldm_jax.models.unet import UNetModel
from ldm_jax.models.vq_autoencoder import VQModel

WEIGHTS_NAME = "diffusion_pytorch_model"


def read_config(directory: str) -> dict[str, Any]:
    """The `config.json` of a diffusers model folder."""
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: not a diffusers save_pretrained folder.")
    with open(path) as f:
        return json.load(f)


def read_weights(directory: str, variant: str | None = None) -> dict[str, np.ndarray]:
    """All tensors of a diffusers model folder (single or sharded safetensors, or `.bin`)."""
    stem = WEIGHTS_NAME + (f".{variant}" if variant else "")
    single = os.path.join(directory, f"{stem}.safetensors")
    index = single + ".index.json"
    if os.path.exists(single):
        return read_safetensors(single)
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        out: dict[str, np.ndarray] = {}
        for shard in shards:
            out.update(read_safetensors(os.path.join(directory, shard)))
        return out
    binary = os.path.join(directory, f"{stem}.bin")
    if os.path.exists(binary):
        return load_state_dict(binary)
    raise FileNotFoundError(f"No {stem}.safetensors (or sharded index, or .bin) in {directory}.")


def _unet_example_inputs(unet: UNetModel, in_channels: int) -> tuple:
    side = 2 ** (len(unet.channel_mult) - 1)
    x = jnp.zeros((1, side, side, in_channels))
    t = jnp.zeros((1,), jnp.int32)
    ctx = None if unet.context_dim is None else jnp.zeros((1, 1, unet.context_dim))
    y = None if unet.num_classes is None else jnp.zeros((1,), jnp.int32)
    return x, t, ctx, y


def load_diffusers_unet(directory: str, variant: str | None = None) -> tuple[UNetModel, dict]:
    """Loads a diffusers UNet2DConditionModel or UNet2DModel folder as (`UNetModel`, params).

    Args:
      directory: folder holding `config.json` and `diffusion_pytorch_model.safetensors`.
      variant: weight variant (e.g. "fp16" for `diffusion_pytorch_model.fp16.safetensors`).

    Returns:
      The module and float32 params: `unet.apply({"params": params}, x, t, context[, y=labels])`
      with x [B, H, W, C] NHWC (context None for a UNet2DModel, which has no cross-attention).

    Raises:
      UnsupportedConfigError: a config field ldm_jax cannot express.
      WeightMismatchError: missing, unexpected or mis-shaped tensors, by name.
    """
    cfg = read_config(directory)
    kind = cfg.get("_class_name", "UNet2DConditionModel")
    nrb = None
    if kind == "UNet2DConditionModel":
        unet = dcfg.unet_from_config(cfg)
        tensors = read_weights(directory, variant)
        name_of = lambda p: names.unet_to_diffusers(flax_path_to_compvis(p), nrb)
    elif kind == "UNet2DModel":
        unet = unet2d_config.unet2d_from_config(cfg)
        tensors = unet2d_config.fuse_attention(
            names.modernise_vae_names(read_weights(directory, variant))
        )
        name_of = lambda p: unet2d_config.unet2d_name(flax_path_to_compvis(p), nrb)
    else:
        raise dcfg.UnsupportedConfigError(
            f"{directory}: _class_name={kind!r}; expected UNet2DConditionModel or UNet2DModel."
        )
    nrb = unet.num_res_blocks
    abstract = abstract_params(unet, *_unet_example_inputs(unet, cfg.get("in_channels", 4)))
    params = assemble(abstract, tensors, name_of, source=f"diffusers {kind} in {directory}")
    return unet, params


def load_diffusers_autoencoder(
    directory: str, variant: str | None = None
) -> tuple[AutoencoderKL | VQModel, dict]:
    """Loads a diffusers AutoencoderKL or VQModel folder as (module, params).

    For AutoencoderKL, `ae.apply(..., x, method=ae.encode)` gives the posterior (`.mean`,
    `.logvar`) and `method=ae.decode` maps latents back. For VQModel, `method=ae.encode` gives
    `Quantized` (`.quant`, `.indices`), `method=ae.encode_to_prequant` the pre-quantisation
    latents, and `method=ae.decode_latent` quantises and decodes them (diffusers' `decode`).
    The diffusers `scaling_factor` is in the config: `read_config(directory)["scaling_factor"]`.
    """
    cfg = read_config(directory)
    kind = cfg.get("_class_name", "AutoencoderKL")
    if kind == "AutoencoderKL":
        ae = dcfg.autoencoder_kl_from_config(cfg)
    elif kind == "VQModel":
        ae = vq_config.vq_from_config(cfg)
    else:
        raise dcfg.UnsupportedConfigError(
            f"{directory}: _class_name={kind!r}; expected AutoencoderKL or VQModel."
        )
    side = ae.downsample_factor
    abstract = abstract_params(ae, jnp.zeros((1, side, side, ae.in_channels)))
    levels = len(ae.ch_mult)
    params = assemble(
        abstract,
        names.modernise_vae_names(read_weights(directory, variant)),
        lambda p: names.vae_to_diffusers(flax_path_to_compvis(p), levels),
        source=f"diffusers {kind} in {directory}",
    )
    return ae, params


def to_diffusers_state_dict(module: Any, params: Any) -> dict[str, np.ndarray]:
    """Our params -> diffusers-named float32 tensors in PyTorch layout."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    out = {}
    for path, arr in flat.items():
        compvis = flax_path_to_compvis(path)
        if isinstance(module, UNetModel):
            name, linear = names.unet_to_diffusers(compvis, module.num_res_blocks), False
        else:
            name = names.vae_to_diffusers(compvis, len(module.ch_mult))
            linear = names.is_diffusers_vae_linear(name)
        out[name] = np.ascontiguousarray(flax_to_torch(np.asarray(arr), path, linear))
    return out


def export_diffusers(
    module: UNetModel | AutoencoderKL | VQModel | LatentDenoiser,
    params: Any,
    directory: str,
    scaling_factor: float = 1.0,
    sample_size: int | None = None,
) -> str:
    """Writes `module` as a diffusers save_pretrained folder (config.json + safetensors).

    Args:
      module: a U-Net (exported as UNet2DConditionModel; a `LatentDenoiser` exports its
        `diffusion_model`), an AutoencoderKL or a VQModel.
      params: its parameters.
      directory: output folder (created).
      scaling_factor: the autoencoder's latent scale, stored in its config.
      sample_size: the config's nominal sample size (default: 32 for U-Nets, the autoencoder's
        `resolution`).

    Returns:
      `directory`.

    Raises:
      UnsupportedConfigError: when diffusers cannot express the architecture.
    """
    params = nn.unbox(params)  # plain arrays, also from a logically partitioned `init`
    if isinstance(module, LatentDenoiser):
        module, params = module.diffusion_model, params["diffusion_model"]
    if isinstance(module, UNetModel):
        in_channels = int(np.shape(params["input_blocks_0_0"]["kernel"])[2])
        config = dcfg.unet_to_config(module, in_channels, sample_size or 32)
    elif isinstance(module, VQModel):
        config = vq_config.vq_to_config(module, scaling_factor)
    elif isinstance(module, AutoencoderKL):
        config = dcfg.autoencoder_kl_to_config(module, scaling_factor)
    else:
        raise dcfg.UnsupportedConfigError(f"Cannot export {type(module).__name__} to diffusers.")
    if sample_size is not None:
        config["sample_size"] = sample_size
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    save_file(
        to_diffusers_state_dict(module, params),
        os.path.join(directory, f"{WEIGHTS_NAME}.safetensors"),
        metadata={"format": "pt"},
    )
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return directory
