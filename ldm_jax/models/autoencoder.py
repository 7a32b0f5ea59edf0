"""First stage: the paper's convolutional Encoder/Decoder and the KL-regularised autoencoder.

The downsampling factor is f = 2 ** (len(ch_mult) - 1). Latents are NHWC [B, H/f, W/f, embed_dim].
"""

from __future__ import annotations

from collections.abc import Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.models.attention import AttnBlock, LinAttnBlock
from ldm_jax.models.layers import Downsample, Dtype, GroupNorm32, ResnetBlock, Upsample, conv3x3
from ldm_jax.models.partitioning import conv_kernel


@flax.struct.dataclass
class DiagonalGaussian:
    """Diagonal Gaussian posterior q(z|x) (the paper's `DiagonalGaussianDistribution`).

    Attributes:
      mean: [B, h, w, c] posterior mean.
      logvar: [B, h, w, c] log-variance, clipped to [-30, 20].
    """

    mean: jax.Array
    logvar: jax.Array

    @classmethod
    def from_moments(cls, moments: jax.Array) -> DiagonalGaussian:
        """Splits [B, h, w, 2c] moments into mean and (clipped) log-variance."""
        mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
        return cls(mean=mean, logvar=jnp.clip(logvar, -30.0, 20.0))

    @property
    def std(self) -> jax.Array:
        return jnp.exp(0.5 * self.logvar)

    def sample(self, rng: jax.Array) -> jax.Array:
        """Reparameterised sample z = mean + std * eps. [B, h, w, c]."""
        return self.mean + self.std * jax.random.normal(rng, self.mean.shape, self.mean.dtype)

    def mode(self) -> jax.Array:
        return self.mean

    def kl(self) -> jax.Array:
        """KL(q || N(0, I)) summed over latent dims. [B] float32."""
        var = jnp.exp(self.logvar)
        return 0.5 * jnp.sum(self.mean**2 + var - 1.0 - self.logvar, axis=(1, 2, 3))


ATTN_TYPES = ("vanilla", "linear", "none")


def make_attn(attn_type: str, num_groups: int, dtype: Dtype, name: str) -> nn.Module | None:
    """The reference `make_attn`: `AttnBlock`, `LinAttnBlock`, or None (an identity)."""
    if attn_type == "vanilla":
        return AttnBlock(num_groups, dtype, name=name)
    if attn_type == "linear":
        return LinAttnBlock(dtype, name=name)
    if attn_type == "none":
        return None
    raise ValueError(f"attn_type must be one of {ATTN_TYPES}, got {attn_type!r}.")


def _apply(module: nn.Module | None, h: jax.Array) -> jax.Array:
    return h if module is None else module(h)


class Encoder(nn.Module):
    """x [B, H, W, in_channels] -> moments [B, H/f, W/f, 2*z_channels or z_channels].

    `attn_type` is "vanilla" (residual single-head attention), "linear" or "none" (identity).
    """

    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    z_channels: int
    attn_resolutions: Sequence[int] = ()
    resolution: int = 256
    double_z: bool = True
    dropout: float = 0.0
    resamp_with_conv: bool = True
    num_groups: int = 32
    attn_type: str = "vanilla"
    dtype: Dtype = jnp.float32

    def _attn(self, name: str) -> nn.Module | None:
        return make_attn(self.attn_type, self.num_groups, self.dtype, name)

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        h = conv3x3(self.ch, "conv_in", self.dtype)(x.astype(self.dtype))
        res = self.resolution
        for i, mult in enumerate(self.ch_mult):
            for j in range(self.num_res_blocks):
                h = ResnetBlock(
                    self.ch * mult,
                    self.dropout,
                    num_groups=self.num_groups,
                    dtype=self.dtype,
                    name=f"down_{i}_block_{j}",
                )(h, None, deterministic)
                if res in self.attn_resolutions:
                    attn = self._attn(f"down_{i}_attn_{j}")
                    h = _apply(attn, h)
            if i != len(self.ch_mult) - 1:
                h = Downsample(
                    self.resamp_with_conv, True, dtype=self.dtype, name=f"down_{i}_downsample"
                )(h)
                res //= 2
        h = self._mid(h, deterministic)
        h = nn.swish(GroupNorm32(self.num_groups, 1e-6, name="norm_out")(h))
        out_ch = 2 * self.z_channels if self.double_z else self.z_channels
        return conv3x3(out_ch, "conv_out", self.dtype)(h)

    def _mid(self, h: jax.Array, deterministic: bool) -> jax.Array:
        block = lambda n: ResnetBlock(
            None, self.dropout, num_groups=self.num_groups, dtype=self.dtype, name=n
        )
        h = block("mid_block_1")(h, None, deterministic)
        h = _apply(self._attn("mid_attn_1"), h)
        return block("mid_block_2")(h, None, deterministic)


class Decoder(nn.Module):
    """z [B, h, w, z_channels] -> x [B, h*f, w*f, out_ch].

    `give_pre_end` returns the features before `norm_out`/`conv_out` (the reference option).
    """

    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    out_ch: int
    attn_resolutions: Sequence[int] = ()
    resolution: int = 256
    dropout: float = 0.0
    resamp_with_conv: bool = True
    num_groups: int = 32
    tanh_out: bool = False
    give_pre_end: bool = False
    attn_type: str = "vanilla"
    dtype: Dtype = jnp.float32

    def _attn(self, name: str) -> nn.Module | None:
        return make_attn(self.attn_type, self.num_groups, self.dtype, name)

    @nn.compact
    def __call__(self, z: jax.Array, deterministic: bool = True) -> jax.Array:
        levels = len(self.ch_mult)
        res = self.resolution // 2 ** (levels - 1)
        h = conv3x3(self.ch * self.ch_mult[-1], "conv_in", self.dtype)(z.astype(self.dtype))
        block = lambda c, n: ResnetBlock(
            c, self.dropout, num_groups=self.num_groups, dtype=self.dtype, name=n
        )
        h = block(None, "mid_block_1")(h, None, deterministic)
        h = _apply(self._attn("mid_attn_1"), h)
        h = block(None, "mid_block_2")(h, None, deterministic)
        for i in reversed(range(levels)):
            for j in range(self.num_res_blocks + 1):
                h = block(self.ch * self.ch_mult[i], f"up_{i}_block_{j}")(h, None, deterministic)
                if res in self.attn_resolutions:
                    attn = self._attn(f"up_{i}_attn_{j}")
                    h = _apply(attn, h)
            if i != 0:
                h = Upsample(self.resamp_with_conv, dtype=self.dtype, name=f"up_{i}_upsample")(h)
                res *= 2
        if self.give_pre_end:
            return h
        h = nn.swish(GroupNorm32(self.num_groups, 1e-6, name="norm_out")(h))
        h = conv3x3(self.out_ch, "conv_out", self.dtype)(h)
        return jnp.tanh(h) if self.tanh_out else h


def coder_kwargs(model: nn.Module) -> dict:
    """The Encoder/Decoder settings an autoencoder (KL or VQ) shares with both halves."""
    return dict(
        ch=model.ch,
        ch_mult=tuple(model.ch_mult),
        num_res_blocks=model.num_res_blocks,
        attn_resolutions=tuple(model.attn_resolutions),
        resolution=model.resolution,
        dropout=model.dropout,
        num_groups=model.num_groups,
        attn_type=model.attn_type,
        resamp_with_conv=model.resamp_with_conv,
        dtype=model.dtype,
    )


class AutoencoderKL(nn.Module):
    """KL-regularised autoencoder: E(x) gives a diagonal Gaussian over z, D(z) gives x back.

    Attributes:
      ch, ch_mult, num_res_blocks, attn_resolutions, resolution, dropout: as in the paper's
        `ddconfig` (`ch_mult` sets f = 2 ** (len(ch_mult) - 1)).
      in_channels / out_ch: image channels.
      z_channels: channels of the encoder output; `embed_dim`: channels of the latent after
        `quant_conv`.
    """

    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    z_channels: int
    embed_dim: int
    in_channels: int = 3
    out_ch: int = 3
    attn_resolutions: Sequence[int] = ()
    resolution: int = 256
    dropout: float = 0.0
    num_groups: int = 32
    attn_type: str = "vanilla"
    resamp_with_conv: bool = True
    dtype: Dtype = jnp.float32

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def setup(self):
        common = coder_kwargs(self)
        self.encoder = Encoder(z_channels=self.z_channels, double_z=True, **common)
        self.decoder = Decoder(out_ch=self.out_ch, **common)
        self.quant_conv = nn.Conv(
            2 * self.embed_dim, (1, 1), dtype=self.dtype, kernel_init=conv_kernel()
        )
        self.post_quant_conv = nn.Conv(
            self.z_channels, (1, 1), dtype=self.dtype, kernel_init=conv_kernel()
        )

    def encode(self, x: jax.Array, deterministic: bool = True) -> DiagonalGaussian:
        """x [B, H, W, in_channels] in [-1, 1] -> posterior over z [B, H/f, W/f, embed_dim]."""
        return DiagonalGaussian.from_moments(self.quant_conv(self.encoder(x, deterministic)))

    def decode(self, z: jax.Array, deterministic: bool = True) -> jax.Array:
        """z [B, h, w, embed_dim] -> reconstruction [B, h*f, w*f, out_ch] (float32)."""
        return self.decoder(self.post_quant_conv(z), deterministic).astype(jnp.float32)

    def __call__(
        self, x: jax.Array, rng: jax.Array | None = None, deterministic: bool = True
    ) -> tuple[jax.Array, DiagonalGaussian]:
        """Encodes, samples z (or takes the mean when `rng` is None) and decodes."""
        posterior = self.encode(x, deterministic)
        z = posterior.mode() if rng is None else posterior.sample(rng)
        return self.decode(z, deterministic), posterior
