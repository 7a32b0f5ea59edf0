"""The VQ-regularised first stage (the paper's `VQModel` / `VQModelInterface`).

E(x) -> `quant_conv` (z_channels -> embed_dim) -> nearest code of `n_embed` -> `post_quant_conv`
(embed_dim -> z_channels) -> D. The LDM runs on the pre-quantisation latents h = quant_conv(E(x))
and the codebook is absorbed into the decoder: `decode_latent(h)` quantises before decoding.

Training: `forward_with_codes` gives, in one forward, the reconstruction, the VQ loss, the indices
and the pre-quantisation latents h. With an EMA codebook (`forward_with_codes(x, ema=True)`) the
loss is the commitment term alone, the codebook gets zero gradient, and the trainer writes the
result of `ldm_jax.losses.vq_codebook.ema_update(..., h, indices, ...)` into
`params["quantize"]["embedding"]["embedding"]` after the optimizer step. `ema` is a call argument,
not a module field: how the codebook is trained does not change the network or its parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.models.autoencoder import Decoder, Encoder, coder_kwargs
from ldm_jax.models.layers import Dtype
from ldm_jax.models.partitioning import conv_kernel
from ldm_jax.models.quantizer import Quantized, VectorQuantizer, vq_loss


class VQForward(NamedTuple):
    """One training forward of `VQModel` (unpacks as a 4-tuple)."""

    x_rec: jax.Array  # [B, H, W, out_ch] float32 reconstruction
    loss: jax.Array  # [] VQ (codebook + commitment, or commitment only with ema) loss
    indices: jax.Array  # [B, h, w] int32 code indices
    h: jax.Array  # [B, h, w, embed_dim] pre-quantisation latents (quant_conv output)


class VQModel(nn.Module):
    """Vector-quantised autoencoder.

    Attributes:
      ch, ch_mult, num_res_blocks, attn_resolutions, resolution, dropout, attn_type,
        resamp_with_conv: the reference `ddconfig` (f = 2 ** (len(ch_mult) - 1)).
      z_channels: encoder output / decoder input channels.
      embed_dim: code width (channels of the latent after `quant_conv`).
      n_embed: number of codebook entries.
      double_z: the reference `ddconfig.double_z` (False in every released VQ model).
      beta, legacy: the quantiser's commitment weight and loss form.
    """

    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    z_channels: int
    embed_dim: int
    n_embed: int
    in_channels: int = 3
    out_ch: int = 3
    attn_resolutions: Sequence[int] = ()
    resolution: int = 256
    dropout: float = 0.0
    num_groups: int = 32
    attn_type: str = "vanilla"
    resamp_with_conv: bool = True
    double_z: bool = False
    beta: float = 0.25
    legacy: bool = True
    dtype: Dtype = jnp.float32

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def setup(self):
        common = coder_kwargs(self)
        self.encoder = Encoder(z_channels=self.z_channels, double_z=self.double_z, **common)
        self.decoder = Decoder(out_ch=self.out_ch, **common)
        self.quant_conv = nn.Conv(
            self.embed_dim, (1, 1), dtype=self.dtype, kernel_init=conv_kernel()
        )
        self.quantize = VectorQuantizer(self.n_embed, self.embed_dim, self.beta, self.legacy)
        self.post_quant_conv = nn.Conv(
            self.z_channels, (1, 1), dtype=self.dtype, kernel_init=conv_kernel()
        )

    def encode_to_prequant(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        """x [B, H, W, in_channels] -> h [B, H/f, W/f, embed_dim] before quantisation."""
        return self.quant_conv(self.encoder(x, deterministic))

    def encode(self, x: jax.Array, deterministic: bool = True) -> Quantized:
        """x -> quantised latents, loss and indices ([B, H/f, W/f])."""
        return self.quantize(self.encode_to_prequant(x, deterministic))

    def decode(self, quant: jax.Array, deterministic: bool = True) -> jax.Array:
        """quant [B, h, w, embed_dim] -> x [B, h*f, w*f, out_ch] float32 (no quantisation)."""
        return self.decoder(self.post_quant_conv(quant), deterministic).astype(jnp.float32)

    def decode_latent(
        self, h: jax.Array, force_not_quantize: bool = False, deterministic: bool = True
    ) -> jax.Array:
        """The `VQModelInterface.decode`: quantise h (unless told not to), then decode."""
        quant = h if force_not_quantize else self.quantize(h).quant
        return self.decode(quant, deterministic)

    def decode_code(self, indices: jax.Array, deterministic: bool = True) -> jax.Array:
        """indices [B, h, w] int -> x [B, h*f, w*f, out_ch]."""
        return self.decode(self.quantize.get_codebook_entry(indices), deterministic)

    def __call__(
        self, x: jax.Array, deterministic: bool = True
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x -> (reconstruction [B, H, W, out_ch], VQ loss [], indices [B, h, w])."""
        q = self.encode(x, deterministic)
        return self.decode(q.quant, deterministic), q.loss, q.indices

    def forward_with_codes(
        self, x: jax.Array, deterministic: bool = True, ema: bool = False
    ) -> VQForward:
        """x [B, H, W, in_channels] -> `VQForward` (x_rec, loss, indices, h) in one forward.

        The same reconstruction, loss and indices as `__call__`, plus h, the latents the
        quantiser saw (for the EMA codebook update and dead-code restarts). With `ema=True` the
        loss is beta * commitment only (`quantizer.vq_loss`), so the codebook gets no gradient.
        """
        h = self.encode_to_prequant(x, deterministic)
        q = self.quantize(h)
        loss = q.loss
        if ema:
            z_q = self.quantize.get_codebook_entry(q.indices)
            loss = vq_loss(h, z_q, self.beta, self.legacy, ema=True)
        return VQForward(self.decode(q.quant, deterministic), loss, q.indices, h)
