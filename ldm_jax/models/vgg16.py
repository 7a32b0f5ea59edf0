"""The convolutional part of VGG16 (Simonyan & Zisserman 2015, configuration D), as LPIPS taps it.

Thirteen 3x3 convolutions (padding 1, bias, ReLU) in five blocks of 2, 2, 3, 3, 3, with a 2x2
stride-2 max-pool between blocks. The five outputs are the activations LPIPS compares, one per
block after its last ReLU: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3. Convolutions are named
`conv{block}_{index}` (`conv1_1` ... `conv5_3`).

`Conv` holds the same parameters as `nn.Conv` (`kernel` [k, k, C, F], `bias` [F]); on feature maps
of at most 16 positions it runs as one matmul over the k*k shifted copies (im2col): XLA:CPU's
convolution runs a 3x3 convolution on 2x2 or 1x1 maps at under 1 GFLOP/s (2x2x512 -> 512, batch
16: 270 ms, the matmul 2 ms), and VGG16 ends on such maps for 32x32 or 16x16 images.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

# Output channels of each block's convolutions.
BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
TAP_CHANNELS = tuple(block[-1] for block in BLOCKS)  # (64, 128, 256, 512, 512)
TAP_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
SMALL_MAP = 16  # Positions up to which a stride-1 convolution runs as im2col + matmul.


def conv2d(x: jax.Array, kernel: jax.Array, bias: jax.Array, stride: int, pad: int) -> jax.Array:
    """Square-kernel convolution with symmetric zero padding, as `nn.Conv` computes it.

    Args:
      x: [B, H, W, C].
      kernel: [k, k, C, F].
      bias: [F].
      stride: the same in both directions.
      pad: zeros added on every side.

    Returns:
      [B, (H + 2 pad - k) // stride + 1, (W + 2 pad - k) // stride + 1, F].
    """
    k = kernel.shape[0]
    out_h, out_w = x.shape[1] + 2 * pad - k + 1, x.shape[2] + 2 * pad - k + 1
    if stride == 1 and out_h * out_w <= SMALL_MAP:
        padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        cols = [padded[:, i : i + out_h, j : j + out_w] for i in range(k) for j in range(k)]
        patches = jnp.concatenate(cols, axis=-1)  # [B, h, w, k * k * C], (i, j, c) order.
        y = patches @ kernel.reshape(-1, kernel.shape[-1])  # [B, h, w, F]
    else:
        y = jax.lax.conv_general_dilated(
            x,
            kernel,
            (stride, stride),
            ((pad, pad), (pad, pad)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
    return y + bias


class Conv(nn.Module):
    """A k x k convolution with bias and the parameters of `nn.Conv` (see module docstring).

    Attributes:
      features: output channels F.
      kernel_size: k.
      strides: the stride in both directions.
      padding: zeros added on every side.
    """

    features: int
    kernel_size: int
    strides: int = 1
    padding: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x [B, H, W, C] -> [B, H', W', features]."""
        k = self.kernel_size
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return conv2d(x, kernel, bias, self.strides, self.padding)


class VGG16Features(nn.Module):
    """VGG16 convolutions returning one activation per block.

    Input side lengths should be at least 16 so that every block sees at least one pixel.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        """Runs the five blocks.

        Args:
          x: [B, H, W, 3] (already normalised as the caller's weights expect).

        Returns:
          [relu1_2 [B, H, W, 64], relu2_2 [B, H/2, W/2, 128], relu3_3 [B, H/4, W/4, 256],
           relu4_3 [B, H/8, W/8, 512], relu5_3 [B, H/16, W/16, 512]] (sides floored).
        """
        taps = []
        for block, widths in enumerate(BLOCKS, start=1):
            if block > 1:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for index, width in enumerate(widths, start=1):
                x = nn.relu(Conv(width, 3, padding=1, name=f"conv{block}_{index}")(x))
            taps.append(x)
        return taps
