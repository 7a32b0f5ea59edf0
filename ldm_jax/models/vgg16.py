"""The convolutional part of VGG16 (Simonyan & Zisserman 2015, configuration D), as LPIPS taps it.

Thirteen 3x3 convolutions (padding 1, bias, ReLU) in five blocks of 2, 2, 3, 3, 3, with a 2x2
stride-2 max-pool between blocks. The five outputs are the activations LPIPS compares, one per
block after its last ReLU: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3. Convolutions are named
`conv{block}_{index}` (`conv1_1` ... `conv5_3`).
"""

from __future__ import annotations

import flax.linen as nn
import jax

# Output channels of each block's convolutions.
BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
TAP_CHANNELS = tuple(block[-1] for block in BLOCKS)  # (64, 128, 256, 512, 512)
TAP_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


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
                conv = nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), name=f"conv{block}_{index}")
                x = nn.relu(conv(x))
            taps.append(x)
        return taps
