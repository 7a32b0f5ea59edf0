"""diffusers VQModel `config.json` <-> our `VQModel` hyperparameters."""

from __future__ import annotations

from typing import Any

from ldm_jax.interop.diffusers_config import (
    UnsupportedConfigError,
    vae_common_from_config,
    vae_common_to_config,
)
from ldm_jax.models.vq_autoencoder import VQModel


def vq_from_config(cfg: dict[str, Any]) -> VQModel:
    """A `VQModel` computing what diffusers' VQModel with `cfg` computes."""
    if cfg.get("lookup_from_codebook", False):
        raise UnsupportedConfigError("VQModel config lookup_from_codebook=True is not supported.")
    common = vae_common_from_config(cfg, "VQModel")
    latent = cfg.get("latent_channels", 3)
    return VQModel(
        z_channels=latent,
        embed_dim=cfg.get("vq_embed_dim") or latent,
        n_embed=cfg.get("num_vq_embeddings", 256),
        double_z=False,
        **common,
    )


def vq_to_config(vq: VQModel, scaling_factor: float = 1.0) -> dict[str, Any]:
    """The diffusers VQModel config equivalent to `vq`."""
    if vq.double_z or vq.attn_type != "vanilla" or not vq.resamp_with_conv:
        raise UnsupportedConfigError(
            "diffusers' VQModel needs double_z=False, attn_type='vanilla', resamp_with_conv=True."
        )
    return {
        "_class_name": "VQModel",
        **vae_common_to_config(vq),
        "latent_channels": vq.z_channels,
        "vq_embed_dim": vq.embed_dim,
        "num_vq_embeddings": vq.n_embed,
        "norm_type": "group",
        "scaling_factor": scaling_factor,
    }
