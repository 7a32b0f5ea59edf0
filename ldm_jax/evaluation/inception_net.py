"""The FID Inception-v3 (TensorFlow's 2015-12-05 graph as ported by pytorch-fid), in flax, NHWC.

This is pytorch-fid's `fid_inception_v3()`: torchvision's Inception-v3 layout with 1008 classes,
no auxiliary head, and the FID patches that reproduce the TF graph: the pooling branch of the
A, C and first E blocks averages over valid pixels only (`count_include_pad=False`), and the last
E block (`Mixed_7c`) max-pools instead. Every convolution is conv (no bias) + BatchNorm
(inference, eps 0.001) + ReLU. Submodule names are pytorch-fid's state-dict names
(`Mixed_6d.branch1x1.conv.weight` is `Mixed_6d/branch1x1/conv/kernel` here), so weight import
is a rename (`ldm_jax.evaluation.inception_weights`).

`FIDInceptionV3.__call__` takes the network's input range: [B, H, W, 3] float in [-1, 1], any
size >= 75 (299 for the standard features). Turning images into that input (resizing, scaling)
is `ldm_jax.evaluation.fid_protocol`; `inception_weights.InceptionFeatures` puts both together.

Outputs:
  * `pool3` [B, 2048]: the final average pool, the FID features (TF tensor `pool_3:0`).
  * `logits` [B, 1008]: pytorch-fid's `fc` (TF `softmax/logits`, weights and biases).
  * `logits_unbiased` [B, 1008]: `pool3 @ fc.kernel` without the bias: the Inception Score's
    input in the reference implementations (improved-GAN's and guided-diffusion's evaluator take
    `softmax/logits/MatMul`; torch-fidelity calls it `logits_unbiased`).
  * `spatial` [B, h * w * 7] (2023 = 17 * 17 * 7 at 299 px): sFID's features, the first 7
    channels of TF's `mixed_6/conv:0`, flattened in NHWC order (h, w, c) as guided-diffusion's
    evaluator flattens them. TF's `mixed`, `mixed_1`, ... `mixed_10` are torchvision's `Mixed_5b`,
    `5c`, `5d`, `6a`, `6b`, `6c`, `6d`, `6e`, `7a`, `7b`, `7c` (torch-fidelity's and pytorch-fid's
    weight-conversion tables map `mixed_6/conv/*` to `Mixed_6d.branch1x1.*`), so this is the
    1x1 branch of `Mixed_6d`. We take it after its ReLU: in that graph the op that carries a
    layer scope's own name (`mixed_6/conv`) is the layer's last op, the Relu, while its
    BatchNorm is `mixed_6/conv/batchnorm`. That last point is read from the graph's naming
    convention, not checked against the graph file (not downloadable here); before ReLU the
    negative entries would differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import PrecisionLike

NUM_CLASSES = 1008  # TF's ImageNet head: 1000 classes + 8 unused.
SPATIAL_CHANNELS = 7  # sFID keeps the first 7 channels of mixed_6/conv.
BN_EPS = 1e-3
HIGHEST = jax.lax.Precision.HIGHEST

Pad = int | tuple[int, int]


def _padding(pad: Pad) -> tuple[tuple[int, int], tuple[int, int]]:
    ph, pw = (pad, pad) if isinstance(pad, int) else pad
    return ((ph, ph), (pw, pw))


def _avg_pool_valid(x: jnp.ndarray) -> jnp.ndarray:
    """3x3 stride-1 average over the valid pixels only (TF's SAME avg pool)."""
    return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_same(x: jnp.ndarray) -> jnp.ndarray:
    return nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))


def _max_pool_reduce(x: jnp.ndarray) -> jnp.ndarray:
    return nn.max_pool(x, (3, 3), (2, 2), padding="VALID")


class BasicConv(nn.Module):
    """Conv (no bias) + BatchNorm (running statistics, float32) + ReLU: torchvision's BasicConv2d.

    Attributes:
      features: output channels.
      kernel: (kh, kw), or one int for a square kernel.
      stride: the stride in both directions.
      pad: symmetric zero padding, an int or (ph, pw).
      dtype: the convolution's compute dtype (BatchNorm always runs in float32).
      precision: the convolution's precision (see `FIDInceptionV3`).
    """

    features: int
    kernel: Pad = 1
    stride: int = 1
    pad: Pad = 0
    dtype: jnp.dtype = jnp.float32
    precision: PrecisionLike = HIGHEST

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = (self.kernel, self.kernel) if isinstance(self.kernel, int) else self.kernel
        x = nn.Conv(
            self.features,
            kernel,
            strides=(self.stride, self.stride),
            padding=_padding(self.pad),
            use_bias=False,
            dtype=self.dtype,
            precision=self.precision,
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, dtype=jnp.float32, name="bn")(
            x.astype(jnp.float32)
        )
        return nn.relu(x).astype(self.dtype)


def _block_conv(block: nn.Module):
    """`conv(name, features, kernel=1, ...)`: a `BasicConv` child of `block` with its dtype and
    precision (the Inception blocks' branches)."""
    return lambda name, *a, **k: BasicConv(
        *a, **k, dtype=block.dtype, precision=block.precision, name=name
    )


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b/c/d): 1x1, 5x5, double 3x3 and valid-average-pool branches."""

    pool_features: int
    dtype: jnp.dtype = jnp.float32
    precision: PrecisionLike = HIGHEST

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        conv = _block_conv(self)
        b1 = conv("branch1x1", 64)(x)
        b5 = conv("branch5x5_2", 64, 5, pad=2)(conv("branch5x5_1", 48)(x))
        b3 = conv("branch3x3dbl_1", 64)(x)
        b3 = conv("branch3x3dbl_2", 96, 3, pad=1)(b3)
        b3 = conv("branch3x3dbl_3", 96, 3, pad=1)(b3)
        bp = conv("branch_pool", self.pool_features)(_avg_pool_valid(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a): strided 3x3, double 3x3 and max-pool branches."""

    dtype: jnp.dtype = jnp.float32
    precision: PrecisionLike = HIGHEST

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        conv = _block_conv(self)
        b3 = conv("branch3x3", 384, 3, stride=2)(x)
        bd = conv("branch3x3dbl_1", 64)(x)
        bd = conv("branch3x3dbl_2", 96, 3, pad=1)(bd)
        bd = conv("branch3x3dbl_3", 96, 3, stride=2)(bd)
        return jnp.concatenate([b3, bd, _max_pool_reduce(x)], axis=-1)


class InceptionC(nn.Module):
    """17x17 block (Mixed_6b..6e) with factorised 7x7 convolutions.

    Returns the block output and its 1x1 branch (sFID's tap in Mixed_6d).
    """

    channels_7x7: int
    dtype: jnp.dtype = jnp.float32
    precision: PrecisionLike = HIGHEST

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        conv = _block_conv(self)
        c7 = self.channels_7x7
        b1 = conv("branch1x1", 192)(x)
        b7 = conv("branch7x7_1", c7)(x)
        b7 = conv("branch7x7_2", c7, (1, 7), pad=(0, 3))(b7)
        b7 = conv("branch7x7_3", 192, (7, 1), pad=(3, 0))(b7)
        bd = conv("branch7x7dbl_1", c7)(x)
        bd = conv("branch7x7dbl_2", c7, (7, 1), pad=(3, 0))(bd)
        bd = conv("branch7x7dbl_3", c7, (1, 7), pad=(0, 3))(bd)
        bd = conv("branch7x7dbl_4", c7, (7, 1), pad=(3, 0))(bd)
        bd = conv("branch7x7dbl_5", 192, (1, 7), pad=(0, 3))(bd)
        bp = conv("branch_pool", 192)(_avg_pool_valid(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1), b1


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a)."""

    dtype: jnp.dtype = jnp.float32
    precision: PrecisionLike = HIGHEST

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        conv = _block_conv(self)
        b3 = conv("branch3x3_2", 320, 3, stride=2)(conv("branch3x3_1", 192)(x))
        b7 = conv("branch7x7x3_1", 192)(x)
        b7 = conv("branch7x7x3_2", 192, (1, 7), pad=(0, 3))(b7)
        b7 = conv("branch7x7x3_3", 192, (7, 1), pad=(3, 0))(b7)
        b7 = conv("branch7x7x3_4", 192, 3, stride=2)(b7)
        return jnp.concatenate([b3, b7, _max_pool_reduce(x)], axis=-1)


class InceptionE(nn.Module):
    """8x8 block (Mixed_7b with a valid-average pool, Mixed_7c with a max pool: `max_pool`)."""

    max_pool: bool = False
    dtype: jnp.dtype = jnp.float32
    precision: PrecisionLike = HIGHEST

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        conv = _block_conv(self)
        b1 = conv("branch1x1", 320)(x)
        b3 = conv("branch3x3_1", 384)(x)
        b3a = conv("branch3x3_2a", 384, (1, 3), pad=(0, 1))(b3)
        b3b = conv("branch3x3_2b", 384, (3, 1), pad=(1, 0))(b3)
        bd = conv("branch3x3dbl_1", 448)(x)
        bd = conv("branch3x3dbl_2", 384, 3, pad=1)(bd)
        bda = conv("branch3x3dbl_3a", 384, (1, 3), pad=(0, 1))(bd)
        bdb = conv("branch3x3dbl_3b", 384, (3, 1), pad=(1, 0))(bd)
        pooled = _max_pool_same(x) if self.max_pool else _avg_pool_valid(x)
        bp = conv("branch_pool", 192)(pooled)
        return jnp.concatenate([b1, b3a, b3b, bda, bdb, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's `fid_inception_v3()` network.

    Attributes:
      dtype: compute dtype of the convolutions and the classifier (float32 for reference
        features; BatchNorm and the outputs are float32 regardless).
      precision: of every convolution and matmul. HIGHEST (the default) keeps float32 maths
        on accelerators too, where the default precision rounds float32 inputs (TF32 on
        NVIDIA GPUs, bfloat16 passes on TPUs), which would move the features by about 1e-3
        relative; the network costs about 6 GFLOP per image, so this is cheap.
    """

    dtype: jnp.dtype = jnp.float32
    precision: PrecisionLike = HIGHEST

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> dict[str, jnp.ndarray]:
        """Features of a batch.

        Args:
          x: [B, H, W, 3] float in [-1, 1] (see `fid_protocol` for images -> this range);
            H, W >= 75, 299 for the standard features.

        Returns:
          Dict of float32 arrays: `pool3` [B, 2048], `logits` [B, 1008], `logits_unbiased`
          [B, 1008], `spatial` [B, h * w * 7] (h = w = 17 at 299 px).
        """
        dt = self.dtype
        kw = {"dtype": dt, "precision": self.precision}
        x = x.astype(dt)  # [B, H, W, 3]
        stem: Sequence[tuple[str, int, int, int, int]] = (
            ("Conv2d_1a_3x3", 32, 3, 2, 0),
            ("Conv2d_2a_3x3", 32, 3, 1, 0),
            ("Conv2d_2b_3x3", 64, 3, 1, 1),
        )
        for name, features, kernel, stride, pad in stem:
            x = BasicConv(features, kernel, stride, pad, **kw, name=name)(x)
        x = _max_pool_reduce(x)  # [B, 73, 73, 64] at 299 px
        x = BasicConv(80, 1, **kw, name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, 3, **kw, name="Conv2d_4a_3x3")(x)
        x = _max_pool_reduce(x)  # [B, 35, 35, 192]
        x = InceptionA(32, **kw, name="Mixed_5b")(x)
        x = InceptionA(64, **kw, name="Mixed_5c")(x)
        x = InceptionA(64, **kw, name="Mixed_5d")(x)  # [B, 35, 35, 288]
        x = InceptionB(**kw, name="Mixed_6a")(x)  # [B, 17, 17, 768]
        x, _ = InceptionC(128, **kw, name="Mixed_6b")(x)
        x, _ = InceptionC(160, **kw, name="Mixed_6c")(x)
        x, tap = InceptionC(160, **kw, name="Mixed_6d")(x)  # tap: [B, 17, 17, 192]
        x, _ = InceptionC(192, **kw, name="Mixed_6e")(x)
        x = InceptionD(**kw, name="Mixed_7a")(x)  # [B, 8, 8, 1280]
        x = InceptionE(**kw, name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, **kw, name="Mixed_7c")(x)  # [B, 8, 8, 2048]
        pool3 = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # [B, 2048]
        fc = nn.Dense(NUM_CLASSES, **kw, name="fc")
        logits = fc(pool3).astype(jnp.float32)  # [B, 1008]
        kernel = fc.variables["params"]["kernel"]  # [2048, 1008]
        unbiased = jnp.dot(pool3.astype(dt), kernel.astype(dt), precision=self.precision)
        unbiased = unbiased.astype(jnp.float32)
        spatial = tap[..., :SPATIAL_CHANNELS].astype(jnp.float32)  # [B, 17, 17, 7]
        return {
            "pool3": pool3,
            "logits": logits,
            "logits_unbiased": unbiased,
            "spatial": spatial.reshape(spatial.shape[0], -1),  # [B, 2023]
        }
