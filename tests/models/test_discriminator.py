"""PatchGAN discriminator: parity with a PyTorch copy of the reference, ActNorm init, counts."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.sharding import PartitionSpec

from ldm_jax.models.discriminator import ActNorm, NLayerDiscriminator

TOL = dict(rtol=1e-5, atol=1e-5)
KEY = jax.random.PRNGKey(3)


def _normal(seed: int, *shape: int) -> jax.Array:
    """Test data from numpy (no per-shape jax.random compilations)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


# ---- PyTorch reference (taming-transformers `NLayerDiscriminator` and `ActNorm`, NCHW) ----------
class TorchActNorm(torch.nn.Module):
    """The reference ActNorm (affine, no logdet): data-dependent init on the first train batch."""

    def __init__(self, num_features: int):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.scale = torch.nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    def forward(self, x):
        if self.training and self.initialized.item() == 0:
            with torch.no_grad():
                flat = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1)
                self.loc.data.copy_(-flat.mean(1).view(1, -1, 1, 1))
                self.scale.data.copy_(1 / (flat.std(1).view(1, -1, 1, 1) + 1e-6))
            self.initialized.fill_(1)
        return self.scale * (x + self.loc)


def torch_reference(input_nc: int, ndf: int, n_layers: int, actnorm: bool) -> torch.nn.Sequential:
    """The reference's layer sequence, written as there (first conv, loop, stride-1 block, head)."""
    norm_layer = TorchActNorm if actnorm else torch.nn.BatchNorm2d
    use_bias = actnorm
    seq = [torch.nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), torch.nn.LeakyReLU(0.2)]
    nf_mult = 1
    for n in range(1, n_layers):
        nf_mult_prev, nf_mult = nf_mult, min(2**n, 8)
        seq += [
            torch.nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, 4, 2, 1, bias=use_bias),
            norm_layer(ndf * nf_mult),
            torch.nn.LeakyReLU(0.2),
        ]
    nf_mult_prev, nf_mult = nf_mult, min(2**n_layers, 8)
    seq += [
        torch.nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, 4, 1, 1, bias=use_bias),
        norm_layer(ndf * nf_mult),
        torch.nn.LeakyReLU(0.2),
    ]
    seq += [torch.nn.Conv2d(ndf * nf_mult, 1, 4, 1, 1)]
    return torch.nn.Sequential(*seq)


def _pairs(seq: torch.nn.Sequential, params: dict):
    """(torch tensor, our array, to_torch) for every torch parameter; to_torch maps our layout."""
    conv_kernel = lambda a: np.transpose(np.asarray(a), (3, 2, 0, 1))  # HWIO -> OIHW
    per_channel = lambda a: np.asarray(a).reshape(1, -1, 1, 1)
    same = np.asarray
    for i, layer in enumerate(seq):
        p = params.get(f"main_{i}")
        if isinstance(layer, torch.nn.Conv2d):
            yield layer.weight, p["kernel"], conv_kernel
            if layer.bias is not None:
                yield layer.bias, p["bias"], same
        elif isinstance(layer, torch.nn.BatchNorm2d):
            yield layer.weight, p["scale"], same
            yield layer.bias, p["bias"], same
        elif isinstance(layer, TorchActNorm):
            yield layer.loc, p["loc"], per_channel
            yield layer.scale, p["scale"], per_channel


def _copy_into_torch(seq: torch.nn.Sequential, params: dict) -> None:
    n_ours = len(jax.tree.leaves(params))
    pairs = list(_pairs(seq, params))
    assert len(pairs) == n_ours == len(list(seq.parameters()))  # no parameter left out on a side
    with torch.no_grad():
        for t, a, to_torch in pairs:
            assert tuple(t.shape) == to_torch(a).shape
            t.copy_(torch.from_numpy(np.array(to_torch(a))))


def _to_torch(x) -> torch.Tensor:
    return torch.from_numpy(np.array(np.transpose(np.asarray(x), (0, 3, 1, 2))))


def _to_nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def _numpy_variables(model: nn.Module, x: jax.Array, seed: int) -> dict:
    """Variables of `model` drawn with numpy (jax.random compiles slowly per shape here).

    Kernels N(0, 1/fan_in), norm scales 1 + N(0, 0.1^2), biases and ActNorm locs N(0, 0.1^2);
    statistics at the reference's starting values (running mean 0, var 1, ActNorm not
    initialised; `test_init_distribution_and_defaults` checks that `init` gives these).
    """
    init = lambda x: nn.unbox(model.init(jax.random.PRNGKey(0), x, train=True))
    shapes = jax.eval_shape(init, x)  # abstract: nothing is compiled
    rng = np.random.default_rng(seed)

    def param(path, s):
        noise = rng.standard_normal(s.shape).astype(np.float32)
        if path[-1].key == "kernel":
            return jnp.asarray(noise / np.sqrt(np.prod(s.shape[:-1])))
        return jnp.asarray(0.1 * noise + (1.0 if path[-1].key == "scale" else 0.0))

    stat = lambda path, s: jnp.full(s.shape, float(path[-1].key == "var"), jnp.float32)
    return {
        "params": jax.tree_util.tree_map_with_path(param, shapes["params"]),
        "batch_stats": jax.tree_util.tree_map_with_path(stat, shapes["batch_stats"]),
    }


def _setup(norm: str, n_layers: int, ndf: int = 8, size: int = 32):
    model = NLayerDiscriminator(input_nc=3, ndf=ndf, n_layers=n_layers, norm=norm)
    xs = [_normal(10 * n_layers + i, 2, size, size, 3) * s + s for i, s in enumerate((1, 2, 0.5))]
    variables = _numpy_variables(model, xs[0], seed=n_layers)
    seq = torch_reference(3, ndf, n_layers, actnorm=norm == "actnorm")
    _copy_into_torch(seq, variables["params"])
    return model, variables, seq, xs


def _jitted(model):
    train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    evaluate = jax.jit(lambda v, x: model.apply(v, x, train=False))
    return train, evaluate


@pytest.mark.parametrize("norm", ["batch", "actnorm"])
@pytest.mark.parametrize("n_layers", [2, 3])
def test_forward_parity_train_and_eval(norm, n_layers):
    model, variables, seq, (x1, x2, x3) = _setup(norm, n_layers)
    train, evaluate = _jitted(model)
    seq.eval()  # before any training step: running averages 0/1, ActNorm not initialised
    np.testing.assert_allclose(evaluate(variables, x1), _to_nhwc(seq(_to_torch(x1))), **TOL)
    seq.train()
    for x in (x1, x2):  # the first batch initialises ActNorm, the second must not
        out, state = train(variables, x)
        variables = {**variables, **state}
        expected = _to_nhwc(seq(_to_torch(x)))  # one torch step per batch (updates its stats)
        assert out.shape == expected.shape and out.dtype == jnp.float32
        np.testing.assert_allclose(out, expected, **TOL)
    assert out.shape == ((2, 6, 6, 1) if n_layers == 2 else (2, 2, 2, 1))
    for i, layer in enumerate(seq):  # the stored statistics after two training steps
        stats = variables["batch_stats"].get(f"main_{i}")
        if isinstance(layer, torch.nn.BatchNorm2d):
            np.testing.assert_allclose(stats["mean"], layer.running_mean.numpy(), **TOL)
            np.testing.assert_allclose(stats["var"], layer.running_var.numpy(), **TOL)
        elif isinstance(layer, TorchActNorm):
            params = variables["params"][f"main_{i}"]
            loc = params["loc"] + stats["loc_offset"]
            scale = params["scale"] + stats["scale_offset"]
            np.testing.assert_allclose(loc, layer.loc.detach().numpy().ravel(), **TOL)
            np.testing.assert_allclose(scale, layer.scale.detach().numpy().ravel(), rtol=1e-5)
            assert stats["initialized"] == 1.0
    seq.eval()
    np.testing.assert_allclose(evaluate(variables, x3), _to_nhwc(seq(_to_torch(x3))), **TOL)


@pytest.mark.parametrize("norm", ["batch", "actnorm"])
def test_gradients_match_torch_in_train_mode(norm):
    """Input and parameter gradients through batch statistics / the ActNorm initialisation."""
    model, variables, seq, (x, _, _) = _setup(norm, n_layers=2, size=24)
    w = _normal(7, 2, 4, 4, 1)  # 24 -> 12 -> 6 -> 5 -> 4

    def objective(params, x):
        out, _ = model.apply(
            {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.sum(out * w)

    g_params, g_x = jax.jit(jax.grad(objective, argnums=(0, 1)))(variables["params"], x)
    xt = _to_torch(x).requires_grad_(True)
    seq.train()
    (seq(xt) * _to_torch(w)).sum().backward()
    np.testing.assert_allclose(g_x, _to_nhwc(xt.grad), **TOL)
    for t, a, to_torch in _pairs(seq, g_params):
        np.testing.assert_allclose(to_torch(a), t.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_actnorm_first_batch_normalises_each_channel():
    model = NLayerDiscriminator(input_nc=3, ndf=8, n_layers=3, norm="actnorm")
    x1, x2 = (jnp.tanh(_normal(seed, 3, 32, 32, 3)) * 2 + 0.5 for seed in (1, 2))
    variables = _numpy_variables(model, x1, seed=5)
    is_actnorm = lambda mdl, _: isinstance(mdl, ActNorm)

    def run(variables, x):
        return model.apply(
            variables, x, train=True, mutable=["batch_stats", "intermediates"],
            capture_intermediates=is_actnorm,
        )  # fmt: skip

    _, state = jax.jit(run)(variables, x1)
    names = sorted(state["intermediates"])
    assert names == ["main_3", "main_6", "main_9"]
    for name in names:
        y = np.asarray(state["intermediates"][name]["__call__"][0], np.float64)  # [B, H, W, C]
        flat = y.reshape(-1, y.shape[-1])
        np.testing.assert_allclose(flat.mean(0), 0.0, atol=1e-5)
        # scale = 1 / (std + 1e-6) leaves a std of std / (std + 1e-6): 1 within about 1e-4 here.
        np.testing.assert_allclose(flat.std(0, ddof=1), 1.0, atol=2e-4)
        assert state["batch_stats"][name]["initialized"] == 1.0
    # A second batch keeps the first batch's values (no re-initialisation).
    variables = {**variables, "batch_stats": state["batch_stats"]}
    _, state2 = jax.jit(run)(variables, x2)
    jax.tree.map(np.testing.assert_array_equal, state2["batch_stats"], state["batch_stats"])
    y2 = np.asarray(state2["intermediates"]["main_3"]["__call__"][0]).reshape(-1, 16)
    assert np.abs(y2.mean(0)).max() > 1e-2  # x2 is not x1: its outputs are not standardised


# Closed form for input_nc=3, ndf=64, n_layers=3: convs 3->64 (+bias), 64->128, 128->256,
# 256->512 (4x4, no bias with BatchNorm), 512->1 (+bias), and 2 affine values per norm channel.
_CONVS = 16 * (3 * 64 + 64 * 128 + 128 * 256 + 256 * 512 + 512 * 1) + 64 + 1
REFERENCE_COUNTS = {"batch": _CONVS + 2 * 896, "actnorm": _CONVS + 3 * 896}


@pytest.mark.parametrize("norm", ["batch", "actnorm"])
def test_full_size_parameter_count_equals_reference(norm):
    model = NLayerDiscriminator(input_nc=3, ndf=64, n_layers=3, norm=norm)
    x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=True), x)
    ours = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(nn.unbox(shapes["params"])))
    torch_count = sum(p.numel() for p in torch_reference(3, 64, 3, norm == "actnorm").parameters())
    assert ours == torch_count == REFERENCE_COUNTS[norm]
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), nn.unbox(shapes), x)
    assert out.shape == (1, 30, 30, 1)


def test_init_distribution_and_defaults():
    """weights_init: kernels N(0, 0.02), BatchNorm scale N(1, 0.02) and bias 0; torch conv bias.

    Also the partitioning names and the starting statistics (running mean 0 and var 1; ActNorm
    loc 0, scale 1, offsets 0 and not initialised).
    """
    model = NLayerDiscriminator(input_nc=3, ndf=64, n_layers=3, norm="batch")
    boxed = jax.jit(lambda k: model.init(k, jnp.zeros((1, 24, 24, 3)), train=True))(KEY)
    params = nn.unbox(boxed)["params"]
    kernel = np.asarray(params["main_8"]["kernel"])  # [4, 4, 256, 512]
    assert kernel.shape == (4, 4, 256, 512)
    assert abs(kernel.mean()) < 1e-3 and abs(kernel.std() - 0.02) < 2e-4
    scale = np.asarray(params["main_9"]["scale"])  # 512 values
    assert abs(scale.mean() - 1.0) < 5e-3 and abs(scale.std() - 0.02) < 4e-3
    np.testing.assert_array_equal(params["main_9"]["bias"], 0.0)
    assert "bias" not in params["main_2"] and "bias" not in params["main_8"]
    bound = 1 / np.sqrt(3 * 16)
    first_bias = np.asarray(params["main_0"]["bias"])
    assert np.abs(first_bias).max() <= bound and first_bias.std() > bound / 3
    assert params["main_11"]["kernel"].shape == (4, 4, 512, 1)
    specs = nn.get_partition_spec(boxed)["params"]
    assert specs["main_8"]["kernel"] == PartitionSpec(None, None, "conv_in", "conv_out")
    assert specs["main_9"]["scale"] == PartitionSpec()
    stats = nn.unbox(boxed)["batch_stats"]["main_9"]
    np.testing.assert_array_equal(stats["mean"], 0.0)  # init writes no statistics
    np.testing.assert_array_equal(stats["var"], 1.0)
    actnorm = jax.jit(lambda x: ActNorm().init(KEY, x, train=True))(jnp.ones((2, 3, 3, 5)))
    expected = {
        "params": {"loc": np.zeros(5), "scale": np.ones(5)},
        "batch_stats": {"loc_offset": np.zeros(5), "scale_offset": np.zeros(5), "initialized": 0},
    }
    jax.tree.map(np.testing.assert_array_equal, actnorm, expected)


def test_bfloat16_compute_keeps_float32_norms_and_logits():
    model = NLayerDiscriminator(input_nc=1, ndf=8, n_layers=2, norm="batch", dtype=jnp.bfloat16)
    x = _normal(3, 2, 16, 16, 1)
    variables = _numpy_variables(model, x, seed=4)
    ref = NLayerDiscriminator(input_nc=1, ndf=8, n_layers=2, norm="batch")
    run = lambda m: jax.jit(lambda v, x: m.apply(v, x, train=True, mutable=["batch_stats"]))
    out, state = run(model)(variables, x)
    out32, _ = run(ref)(variables, x)
    assert out.dtype == jnp.float32 and variables["params"]["main_0"]["kernel"].dtype == jnp.float32
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(state))
    np.testing.assert_allclose(out, out32, atol=0.05 * float(jnp.abs(out32).max()))


def test_bad_options_raise():
    x = jnp.zeros((1, 24, 24, 3))
    with pytest.raises(ValueError, match="norm"):
        NLayerDiscriminator(norm="group").init(KEY, x, train=True)
    with pytest.raises(ValueError, match="input_nc"):
        NLayerDiscriminator(input_nc=1).init(KEY, x, train=True)
