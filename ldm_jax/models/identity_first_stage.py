"""The identity first stage: E(x) = x and D(z) = z, so the diffusion runs in pixel space.

The paper's LDM-1 (f = 1): the reference's `IdentityFirstStage` in `ldm/models/autoencoder.py`,
whose `encode`, `decode` and `forward` return their input. The latent is the image itself
(channels = image channels, side = image side); it is deterministic, like a VQ first stage's
pre-quantisation h, so the trainers cache only its "mean" and never resample it. No parameters:
`init` gives an empty tree and a workdir needs no stage-1 checkpoint.

The methods mirror what callers use on `AutoencoderKL` and `VQModel`: `encode_to_prequant` and
`decode_latent` (the deterministic-latent interface of VQ), `encode`, `decode`, and `__call__`
returning a tuple that starts with the reconstruction.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.models.layers import Dtype


class IdentityFirstStage(nn.Module):
    """x -> x in both directions (float32 out).

    Attributes:
      channels: image channels, which are also the latent channels.
      dtype: unused (no computation); kept so run-time `clone(dtype=...)` works as on the others.
    """

    channels: int = 3
    dtype: Dtype = jnp.float32

    @property
    def downsample_factor(self) -> int:
        """f = 1: latents have the image's side."""
        return 1

    @property
    def embed_dim(self) -> int:
        """Latent channels (= image channels)."""
        return self.channels

    @property
    def in_channels(self) -> int:
        return self.channels

    @property
    def out_ch(self) -> int:
        return self.channels

    def encode_to_prequant(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        """x [B, H, W, C] in [-1, 1] -> the latent [B, H, W, C] float32 (x itself)."""
        del deterministic
        return jnp.asarray(x, jnp.float32)

    def encode(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        """The reference `encode`: x [B, H, W, C] -> x [B, H, W, C] float32."""
        return self.encode_to_prequant(x, deterministic)

    def decode(self, z: jax.Array, deterministic: bool = True) -> jax.Array:
        """z [B, H, W, C] -> image [B, H, W, C] float32 (z itself)."""
        del deterministic
        return jnp.asarray(z, jnp.float32)

    def decode_latent(
        self, h: jax.Array, force_not_quantize: bool = False, deterministic: bool = True
    ) -> jax.Array:
        """As `VQModel.decode_latent` (nothing to quantise): h [B, H, W, C] -> h float32."""
        del force_not_quantize
        return self.decode(h, deterministic)

    def __call__(
        self, x: jax.Array, rng: jax.Array | None = None, deterministic: bool = True
    ) -> tuple[jax.Array, jax.Array]:
        """x [B, H, W, C] -> (reconstruction x [B, H, W, C] float32, regulariser loss 0 [])."""
        del rng
        return self.decode(self.encode(x, deterministic), deterministic), jnp.zeros((), jnp.float32)
