"""The convolutional part of AlexNet (torchvision's single-tower variant), as LPIPS taps it.

conv1 11x11 stride 4 padding 2 (64) -> ReLU -> 3x3 stride-2 max-pool -> conv2 5x5 padding 2 (192)
-> ReLU -> max-pool -> conv3 3x3 (384) -> ReLU -> conv4 3x3 (256) -> ReLU -> conv5 3x3 (256) ->
ReLU (3x3 convolutions with padding 1). The five ReLU outputs are the LPIPS taps. The
convolutions are `vgg16.Conv` (`nn.Conv`'s parameters; im2col on tiny maps).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from ldm_jax.models.vgg16 import Conv

# (output channels, kernel side, stride, padding) of conv1 ... conv5.
CONVS = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
TAP_CHANNELS = tuple(c[0] for c in CONVS)  # (64, 192, 384, 256, 256)
TAP_NAMES = ("relu1", "relu2", "relu3", "relu4", "relu5")


class AlexNetFeatures(nn.Module):
    """AlexNet convolutions returning the activation after each of the five ReLUs.

    Input side lengths should be at least 31 so that conv2 onwards see at least one pixel.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        """Runs the five convolutions.

        Args:
          x: [B, H, W, 3] (already normalised as the caller's weights expect).

        Returns:
          The five ReLU outputs [B, h_i, w_i, TAP_CHANNELS[i]]; for H = 64: 15, 7, 3, 3, 3.
        """
        taps = []
        for i, (width, side, stride, pad) in enumerate(CONVS, start=1):
            if i in (2, 3):
                x = nn.max_pool(x, (3, 3), strides=(2, 2))
            x = nn.relu(Conv(width, side, strides=stride, padding=pad, name=f"conv{i}")(x))
            taps.append(x)
        return taps
