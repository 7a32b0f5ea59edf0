"""The second-stage network: tau_theta (condition encoder) feeding the U-Net eps_theta."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.models.unet import UNetModel

# How tau_theta(y) enters the U-Net (the reference `LatentDiffusion.conditioning_key`).
CONDITIONING_KEYS = (None, "crossattn", "concat", "hybrid", "adm")


class LatentDenoiser(nn.Module):
    """eps_theta(z_t, t, tau_theta(y)) for every conditioning mode of the paper.

    Submodule names follow the paper's checkpoint layout: `diffusion_model` (the U-Net) and
    `cond_stage_model` (tau_theta; absent when there is none or it has no parameters).

    Attributes:
      diffusion_model: the U-Net.
      cond_stage_model: tau_theta (`ClassEmbedder`, `BERTEmbedder`, `SpatialRescaler`,
        `IdentityEncoder`) or None, in which case y is used as given.
      conditioning_key: None (unconditional), "crossattn" (tau_theta(y) are context tokens),
        "concat" (tau_theta(y) is stacked on z_t as channels), "hybrid" (cross-attention to
        tau_theta(y) plus `concat` channels) or "adm" (y are the U-Net's class labels).
    """

    diffusion_model: UNetModel
    cond_stage_model: nn.Module | None = None
    conditioning_key: str | None = "crossattn"

    def encode_condition(self, labels: jax.Array) -> jax.Array:
        """y -> tau_theta(y): labels [B] -> tokens [B, 1, D], token ids [B, L] -> [B, L, D],
        maps [B, H, W, C] -> [B, h, w, C']; y itself when there is no cond stage."""
        return labels if self.cond_stage_model is None else self.cond_stage_model(labels)

    def __call__(
        self,
        z: jax.Array,
        t: jax.Array,
        labels: jax.Array | None = None,
        deterministic: bool = True,
        concat: jax.Array | None = None,
    ) -> jax.Array:
        """Predicts the U-Net output for noisy latents.

        Args:
          z: [B, h, w, c] noisy latents.
          t: [B] int32 timesteps.
          labels: the condition y fed to tau_theta (class labels [B], token ids [B, L], a map
            [B, H, W, C], or precomputed context / concat channels without a cond stage); None
            for unconditional models.
          deterministic: disables dropout.
          concat: [B, h, w, c'] channels stacked on z for "hybrid" conditioning.

        Returns:
          [B, h, w, out_channels] float32.
        """
        key = self.conditioning_key
        if key not in CONDITIONING_KEYS:
            raise ValueError(
                f"LatentDenoiser: conditioning_key {key!r} not in {CONDITIONING_KEYS}."
            )
        c = None if labels is None else self.encode_condition(labels)
        x, context, y = z, None, None
        if key is None:
            if labels is not None:
                raise ValueError("LatentDenoiser: an unconditional model takes no labels.")
        elif key == "crossattn":
            context = c
        elif key == "adm":
            y = c
        else:
            extra = c if key == "concat" else concat
            if extra is None:
                raise ValueError(f"LatentDenoiser: {key!r} conditioning needs concat channels.")
            x = jnp.concatenate([z, extra.astype(z.dtype)], axis=-1)  # [B, h, w, c + c']
            context = c if key == "hybrid" else None
        return self.diffusion_model(x, t, context, y=y, deterministic=deterministic)
