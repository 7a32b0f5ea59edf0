"""Test-side: tiny LatentDiffusion YAML + `.ckpt` pairs for the concat-conditioned paper models.

The networks are built from the YAML with random parameters, written under the paper's names
(`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.*`) with `torch.save`.
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import yaml

from ldm_jax.interop import compvis_config as ccfg
from ldm_jax.interop.tensors import flax_path_to_compvis, flax_to_torch
from tests.interop.reference import torch

RESOLUTION, F, LATENT = 16, 4, 3  # images 16x16, f = 4, 3 latent channels -> latents 4x4x3
LABELS = 5  # classes of the semantic maps


def _first_stage(kind: str) -> dict:
    ddconfig = dict(
        double_z=kind == "kl",
        z_channels=LATENT,
        resolution=RESOLUTION,
        in_channels=3,
        out_ch=3,
        ch=32,
        ch_mult=[1, 1, 1],
        num_res_blocks=1,
        attn_resolutions=[],
        dropout=0.0,
    )
    params = {"embed_dim": LATENT, "ddconfig": ddconfig, "lossconfig": {"target": "x.Identity"}}
    if kind == "vq":
        params["n_embed"] = 16
    target = "AutoencoderKL" if kind == "kl" else "VQModelInterface"
    return {"target": f"ldm.models.autoencoder.{target}", "params": params}


TASKS = {
    # (first stage, U-Net input channels, cond_stage_config)
    "superres": ("kl", LATENT + 3, {"target": "torch.nn.Identity"}),
    "inpaint": ("vq", LATENT + LATENT + 1, "__is_first_stage__"),
    "semantic": (
        "vq",
        LATENT + 3,
        {
            "target": "ldm.modules.encoders.modules.SpatialRescaler",
            "params": {"n_stages": 2, "in_channels": LABELS, "out_channels": 3},
        },
    ),
}


def yaml_config(task: str) -> dict:
    first, in_ch, cond = TASKS[task]
    unet = {
        "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
        "params": {
            "image_size": RESOLUTION // F,
            "in_channels": in_ch,
            "out_channels": LATENT,
            "model_channels": 32,
            "attention_resolutions": [2],
            "num_res_blocks": 1,
            "channel_mult": [1, 2],
            "num_head_channels": 16,
        },
    }
    return {
        "model": {
            "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
            "params": {
                "linear_start": 0.0015,
                "linear_end": 0.0205,
                "timesteps": 1000,
                "conditioning_key": "concat",
                "scale_factor": 1.0,
                "image_size": RESOLUTION // F,
                "channels": LATENT,
                "unet_config": unet,
                "first_stage_config": _first_stage(first),
                "cond_stage_config": cond,
            },
        }
    }


def _random(module, seed: int, *inputs) -> dict:
    params = nn.unbox(module.init(jax.random.PRNGKey(seed), *inputs))["params"]
    leaves, tree = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(seed)
    noisy = [np.asarray(x) + 0.05 * rng.standard_normal(x.shape).astype(np.float32) for x in leaves]
    return jax.tree_util.tree_unflatten(tree, noisy)


def _named(prefix: str, params: dict) -> dict:
    flat = flax.traverse_util.flatten_dict(params)
    return {
        prefix + flax_path_to_compvis(path): torch.from_numpy(flax_to_torch(v, path).copy())
        for path, v in flat.items()
    }


def write_checkpoint(directory, task: str) -> tuple[str, str]:
    """Writes config.yaml and model.ckpt for `task`; returns their paths."""
    cfg = yaml_config(task)
    p = cfg["model"]["params"]
    unet = ccfg.unet_from_yaml(p["unet_config"])
    first = ccfg.first_stage_from_yaml(p["first_stage_config"])
    side = RESOLUTION // F
    in_ch = p["unet_config"]["params"]["in_channels"]
    sd = _named(
        "model.diffusion_model.",
        _random(unet, 0, jnp.zeros((1, side, side, in_ch)), jnp.zeros((1,), jnp.int32)),
    )
    sd.update(
        _named("first_stage_model.", _random(first, 1, jnp.zeros((1, RESOLUTION, RESOLUTION, 3))))
    )
    cond = ccfg.cond_stage_from_yaml(p["cond_stage_config"], unet)
    if cond is not None:
        x = jnp.zeros((1, RESOLUTION, RESOLUTION, LABELS))
        sd.update(_named("cond_stage_model.", _random(cond, 2, x)))
    ckpt, config = directory / "model.ckpt", directory / "config.yaml"
    torch.save({"state_dict": sd}, ckpt)
    config.write_text(yaml.safe_dump(cfg))
    return str(config), str(ckpt)
