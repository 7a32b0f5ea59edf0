"""The paper's PatchGAN discriminator (`NLayerDiscriminator` of taming-transformers), NHWC.

The network maps an image [B, H, W, input_nc] to a map of real/fake logits [B, H', W', 1], one
per overlapping patch. All convolutions use 4x4 windows with a padding of 1:

  conv(ndf, stride 2) -> LeakyReLU(0.2)
  n_layers - 1 times:  conv(ndf * min(2^n, 8), stride 2) -> norm -> LeakyReLU(0.2)
  once:                conv(ndf * min(2^n_layers, 8), stride 1) -> norm -> LeakyReLU(0.2)
  conv(1, stride 1)

The convolutions followed by BatchNorm carry no bias (the norm has its own offset); with ActNorm
they do, as in the reference. Initialisation follows the reference's `weights_init`: kernels
N(0, 0.02), BatchNorm scale N(1, 0.02) and offset 0; the convolution biases keep PyTorch's default
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) because `weights_init` leaves them alone.

Submodules are named `main_<i>` after the index of the layer in the reference's `nn.Sequential`
(`main.0` conv, `main.1` LeakyReLU, `main.2` conv, `main.3` norm, ...), so a weight import is a
renaming plus the kernel transpose.

Train and eval mode (the `train` argument):
  train=True: BatchNorm normalises with the statistics of the batch and updates its running
    averages; ActNorm initialises itself from the batch on the first such call. Both write the
    `batch_stats` collection, so pass `mutable=["batch_stats"]` to `apply` and keep what it
    returns. Under `jit` over a batch-sharded input the statistics are those of the global batch
    (PyTorch DDP without SyncBatchNorm would use each device's share).
  train=False: BatchNorm uses its running averages, ActNorm its current values; nothing is
    written, so `batch_stats` may be immutable.
`init` creates the running averages (0 and 1) and an uninitialised ActNorm; it writes nothing else.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.models.partitioning import conv_kernel

Dtype = Any
NORMS = ("batch", "actnorm")
KERNEL_SIZE = 4


def _normal(mean: float, stddev: float) -> nn.initializers.Initializer:
    """N(mean, stddev^2) initialiser."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
        return mean + stddev * jax.random.normal(key, shape, dtype)

    return init


def _torch_conv_bias(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's default Conv2d bias initialiser: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class BatchNorm(nn.Module):
    """PyTorch `BatchNorm2d` over [B, H, W, C] in float32 (params `scale`, `bias`).

    Running averages live in `batch_stats` as `mean` and `var` and are updated as PyTorch does:
    new = (1 - momentum) * old + momentum * batch value, with the unbiased (n / (n - 1)) batch
    variance for `var` while normalisation uses the biased one. (flax's `nn.BatchNorm` averages
    the biased variance, so its eval-mode outputs would drift from the reference's.)

    Attributes:
      momentum: PyTorch's momentum (weight of the new batch), 0.1.
      epsilon: added to the variance, 1e-5.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", _normal(1.0, 0.02), (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        xf = x.astype(jnp.float32)  # [B, H, W, C]
        if train:
            mean = jnp.mean(xf, axis=(0, 1, 2))  # [C]
            var = jnp.mean(jnp.square(xf - mean), axis=(0, 1, 2))  # [C], biased
            if not self.is_initializing():
                n = xf.size // c
                unbiased = jax.lax.stop_gradient(var) * (n / max(n - 1, 1))
                m = self.momentum
                running_mean.value = (1 - m) * running_mean.value + m * jax.lax.stop_gradient(mean)
                running_var.value = (1 - m) * running_var.value + m * unbiased
        else:
            mean, var = running_mean.value, running_var.value
        y = (xf - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
        return y.astype(x.dtype)


class ActNorm(nn.Module):
    """ActNorm of taming-transformers, y = scale * (x + loc) per channel, over [B, H, W, C].

    The reference sets loc = -mean and scale = 1 / (std + 1e-6) (std unbiased, per channel over
    batch and positions) on the first training-mode batch, without gradient, and then trains both.
    A flax module cannot overwrite its parameters inside `apply`, so the data-dependent part is
    kept in `batch_stats` as offsets and the values used are

      loc = params.loc + batch_stats.loc_offset,  scale = params.scale + batch_stats.scale_offset.

    The offsets start at 0 (loc 0, scale 1 as the reference before initialisation); the first
    `train=True` call sets them so that loc and scale equal the batch values exactly and sets
    `batch_stats.initialized` to 1.0 (float32, so the collection has one dtype); later calls
    leave them unchanged. The gradient with respect to `params.loc`/`params.scale` is the
    reference's gradient with respect to its loc/scale, so optimisation is the same (with Adam,
    as the reference; a weight decay would act on the parameters only). To import reference
    weights, put them in params with zero offsets and initialized = 1.

    Attributes:
      epsilon: added to the std, 1e-6.
    """

    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        loc = self.param("loc", nn.initializers.zeros, (c,), jnp.float32)
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        loc_offset = self.variable("batch_stats", "loc_offset", jnp.zeros, (c,), jnp.float32)
        scale_offset = self.variable("batch_stats", "scale_offset", jnp.zeros, (c,), jnp.float32)
        initialized = self.variable("batch_stats", "initialized", jnp.zeros, (), jnp.float32)
        xf = x.astype(jnp.float32)  # [B, H, W, C]
        if train and not self.is_initializing():
            flat = jax.lax.stop_gradient(xf).reshape(-1, c)  # [N, C]
            mean = jnp.mean(flat, axis=0)  # [C]
            std = jnp.std(flat, axis=0, ddof=1)  # [C]
            new_loc = -mean - jax.lax.stop_gradient(loc)
            new_scale = 1.0 / (std + self.epsilon) - jax.lax.stop_gradient(scale)
            done = initialized.value > 0
            loc_offset.value = jnp.where(done, loc_offset.value, new_loc)
            scale_offset.value = jnp.where(done, scale_offset.value, new_scale)
            initialized.value = jnp.ones((), jnp.float32)
        y = (scale + scale_offset.value) * (xf + (loc + loc_offset.value))
        return y.astype(x.dtype)


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator: [B, H, W, input_nc] -> logits [B, H', W', 1] (float32).

    For H = 256 and n_layers = 3 the logits are [B, 30, 30, 1] (70x70 receptive field). The
    input must be at least 2^n_layers * 3 pixels wide for the map to be non-empty.

    Attributes:
      input_nc: channels of the input image.
      ndf: channels of the first convolution (multiplied by up to 8 further on).
      n_layers: number of stride-2 convolutions.
      norm: "batch" (the reference's default, `use_actnorm=False`) or "actnorm".
      dtype: compute dtype of the convolutions (norms compute in float32).
      param_dtype: storage dtype of the convolution parameters.
    """

    input_nc: int = 3
    ndf: int = 64
    n_layers: int = 3
    norm: str = "batch"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _conv(self, features: int, in_features: int, stride: int, bias: bool, name: str) -> nn.Conv:
        fan_in = in_features * KERNEL_SIZE * KERNEL_SIZE
        return nn.Conv(
            features,
            (KERNEL_SIZE, KERNEL_SIZE),
            strides=(stride, stride),
            padding=((1, 1), (1, 1)),
            use_bias=bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=conv_kernel(init=_normal(0.0, 0.02)),
            bias_init=_torch_conv_bias(fan_in),
            name=name,
        )

    def _norm(self, name: str) -> nn.Module:
        return BatchNorm(name=name) if self.norm == "batch" else ActNorm(name=name)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.norm not in NORMS:
            raise ValueError(f"NLayerDiscriminator.norm = {self.norm!r}: use one of {NORMS}.")
        if x.shape[-1] != self.input_nc:
            raise ValueError(
                f"NLayerDiscriminator: input has {x.shape[-1]} channels, input_nc is "
                f"{self.input_nc}."
            )
        norm_bias = self.norm != "batch"
        h = self._conv(self.ndf, self.input_nc, 2, True, "main_0")(x.astype(self.dtype))
        h = nn.leaky_relu(h, 0.2)
        index, width = 2, self.ndf
        for n in range(1, self.n_layers + 1):
            out = self.ndf * min(2**n, 8)
            stride = 2 if n < self.n_layers else 1
            h = self._conv(out, width, stride, norm_bias, f"main_{index}")(h)
            h = nn.leaky_relu(self._norm(f"main_{index + 1}")(h, train), 0.2)
            index, width = index + 3, out
        logits = self._conv(1, width, 1, True, f"main_{index}")(h)  # [B, H', W', 1]
        return logits.astype(jnp.float32)
