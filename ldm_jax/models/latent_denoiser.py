"""The second-stage network: tau_theta (condition encoder) feeding the U-Net eps_theta."""

from __future__ import annotations

import flax.linen as nn
import jax

from ldm_jax.models.conditioning import ClassEmbedder
from ldm_jax.models.unet import UNetModel


class LatentDenoiser(nn.Module):
    """eps_theta(z_t, t, tau_theta(y)) with cross-attention conditioning.

    Submodule names follow the paper's checkpoint layout: `diffusion_model` (the U-Net) and
    `cond_stage_model` (tau_theta; absent when unconditional).
    """

    diffusion_model: UNetModel
    cond_stage_model: ClassEmbedder | None = None

    def encode_condition(self, labels: jax.Array) -> jax.Array:
        """labels [B] -> context tokens [B, L, context_dim]."""
        return self.cond_stage_model(labels)

    def __call__(
        self,
        z: jax.Array,
        t: jax.Array,
        labels: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """z [B, h, w, c], t [B] int32, labels [B] (or None) -> eps [B, h, w, c] float32."""
        context = None if self.cond_stage_model is None else self.encode_condition(labels)
        return self.diffusion_model(z, t, context, deterministic=deterministic)
