"""GAN loss terms: closed forms, PyTorch autograd parity, adopt_weight, the adaptive weight."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ldm_jax.losses import adversarial as adv

RNG = np.random.default_rng(0)  # numpy data: no per-shape jax.random compilations


def _normal(*shape: int, std: float = 1.0) -> jax.Array:
    return jnp.asarray(RNG.standard_normal(shape, dtype=np.float32) * std)


# ---- the reference's functions (taming-transformers vqperceptual.py), written in PyTorch -------
def torch_hinge(real, fake):
    return 0.5 * (torch.mean(F.relu(1.0 - real)) + torch.mean(F.relu(1.0 + fake)))


def torch_vanilla(real, fake):
    return 0.5 * (torch.mean(F.softplus(-real)) + torch.mean(F.softplus(fake)))


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_closed_form_values():
    real = jnp.array([[3.0, 0.0], [0.5, -1.5]])  # [B=2, 2 logits]
    fake = jnp.array([[-2.0, 0.5], [1.0, -0.5]])
    hinge = adv.hinge_d_loss(real, fake)
    # example 0: real relu(1-3), relu(1-0) -> 0.5; fake relu(1-2), relu(1+0.5) -> 0.75
    # example 1: real 0.5, 2.5 -> 1.5; fake 2.0, 0.5 -> 1.25
    np.testing.assert_allclose(hinge, [0.5 * (0.5 + 0.75), 0.5 * (1.5 + 1.25)], rtol=1e-6)
    vanilla = adv.vanilla_d_loss(real, fake)
    v0 = 0.25 * (_softplus(-3) + _softplus(0)) + 0.25 * (_softplus(-2) + _softplus(0.5))
    v1 = 0.25 * (_softplus(-0.5) + _softplus(1.5)) + 0.25 * (_softplus(1) + _softplus(-0.5))
    np.testing.assert_allclose(vanilla, [v0, v1], rtol=1e-6)
    np.testing.assert_allclose(adv.generator_loss(fake), [0.75, -0.25], rtol=1e-6)  # -mean
    assert hinge.dtype == vanilla.dtype == jnp.float32
    assert adv.D_LOSSES == {"hinge": adv.hinge_d_loss, "vanilla": adv.vanilla_d_loss}


@pytest.mark.parametrize("name", ["hinge", "vanilla"])
def test_discriminator_losses_and_gradients_match_torch(name):
    real = _normal(3, 5, 5, 1, std=2.0)  # patch logits [B, H', W', 1]
    fake = _normal(3, 5, 5, 1, std=2.0)
    ours = adv.D_LOSSES[name]
    loss_fn = jax.jit(lambda r, f: jnp.mean(ours(r, f)))  # batch mean of the per-example loss
    g_real, g_fake = jax.jit(jax.grad(loss_fn, argnums=(0, 1)))(real, fake)
    rt = torch.tensor(np.asarray(real), requires_grad=True)
    ft = torch.tensor(np.asarray(fake), requires_grad=True)
    ref = (torch_hinge if name == "hinge" else torch_vanilla)(rt, ft)
    ref.backward()
    assert ours(real, fake).shape == (3,)
    np.testing.assert_allclose(loss_fn(real, fake), ref.item(), rtol=1e-6)
    np.testing.assert_allclose(g_real, rt.grad.numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(g_fake, ft.grad.numpy(), rtol=1e-5, atol=1e-8)


def test_generator_loss_and_gradient_match_torch():
    fake = _normal(2, 4, 4, 1).astype(jnp.bfloat16)
    ft = torch.tensor(np.asarray(fake, np.float32), requires_grad=True)
    ref = -torch.mean(ft)
    ref.backward()
    ours = jax.jit(lambda f: jnp.mean(adv.generator_loss(f)))
    assert adv.generator_loss(fake).dtype == jnp.float32
    np.testing.assert_allclose(ours(fake), ref.item(), rtol=1e-6)
    grad = jax.grad(ours)(fake.astype(jnp.float32))
    np.testing.assert_allclose(grad, ft.grad.numpy(), rtol=1e-6)


def test_adopt_weight_under_jit_with_traced_step():
    traces = []

    @jax.jit
    def weight(step, value):
        traces.append(1)
        return adv.adopt_weight(0.75, step, threshold=100, value=value)

    steps = [jnp.int32(s) for s in (0, 99, 100, 101, 10**6)]
    got = [float(weight(s, jnp.float32(0.0))) for s in steps]
    assert got == [0.0, 0.0, 0.75, 0.75, 0.75]  # before / at / after the threshold
    assert float(weight(jnp.int32(50), jnp.float32(0.25))) == 0.25
    assert len(traces) == 1  # step and value are traced: one compilation for every step
    assert adv.adopt_weight(2.0, 5, threshold=0).dtype == jnp.float32  # threshold 0: always on
    assert float(adv.adopt_weight(2.0, 0, threshold=0)) == 2.0


# ---- the adaptive weight on a toy decoder --------------------------------------------------------
# decoder: z [B, 6, 6, 4] -> conv3x3 (4 -> 8) -> SiLU -> conv3x3 (8 -> 3) = the "last layer";
# a fixed toy discriminator conv3x3 (3 -> 1) gives the patch logits of the reconstruction.
def _toy():
    rng = np.random.default_rng(1)
    normal = lambda std, *shape: jnp.asarray(rng.standard_normal(shape, np.float32) * std)
    params = {"w1": normal(0.3, 3, 3, 4, 8), "b1": normal(0.1, 8), "last": normal(0.3, 3, 3, 8, 3)}
    disc = normal(0.5, 3, 3, 3, 1)
    z = normal(1.0, 2, 6, 6, 4)
    x = jnp.asarray(rng.uniform(-1, 1, (2, 6, 6, 3)).astype(np.float32))
    return params, disc, z, x


def _conv(h, k):
    return jax.lax.conv_general_dilated(
        h, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )  # fmt: skip


def _jax_terms(params, disc, z, x, g_scale):
    """(nll, g_loss) as the reference: summed L1 per example averaged over B; -mean(logits)."""
    rec = _conv(jax.nn.silu(_conv(z, params["w1"]) + params["b1"]), params["last"])
    nll = jnp.mean(jnp.sum(jnp.abs(x - rec), axis=(1, 2, 3)))
    g_loss = g_scale * jnp.mean(adv.generator_loss(_conv(rec, disc)))
    return nll, g_loss


def _total(params, disc, z, x, g_scale, disc_weight, weight_fn=adv.adaptive_weight):
    """nll + lambda * g_loss with lambda from the two gradients w.r.t. the last kernel."""

    def term(i, last):
        return _jax_terms({**params, "last": last}, disc, z, x, g_scale)[i]

    nll_grad = jax.grad(lambda k: term(0, k))(params["last"])
    g_grad = jax.grad(lambda k: term(1, k))(params["last"])
    lam = weight_fn(nll_grad, g_grad, disc_weight)
    nll, g_loss = _jax_terms(params, disc, z, x, g_scale)
    return nll + lam * g_loss, lam


def _torch_total(params, disc, z, x, g_scale, disc_weight):
    """The reference's calculate_adaptive_weight and its use, in PyTorch (NCHW, OIHW)."""
    t = lambda a, perm: torch.tensor(np.transpose(np.asarray(a), perm).copy())
    w1 = t(params["w1"], (3, 2, 0, 1)).requires_grad_(True)
    b1 = t(params["b1"], (0,)).requires_grad_(True)
    last = t(params["last"], (3, 2, 0, 1)).requires_grad_(True)
    zt, xt, dt = t(z, (0, 3, 1, 2)), t(x, (0, 3, 1, 2)), t(disc, (3, 2, 0, 1))
    rec = F.conv2d(F.silu(F.conv2d(zt, w1, b1, padding=1)), last, padding=1)
    nll = torch.sum(torch.abs(xt - rec)) / rec.shape[0]
    g_loss = -g_scale * torch.mean(F.conv2d(rec, dt, padding=1))
    nll_grads = torch.autograd.grad(nll, last, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
    d_weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
    d_weight = torch.clamp(d_weight, 0.0, 1e4).detach() * disc_weight
    (nll + d_weight * g_loss).backward()
    back = lambda g, perm: np.transpose(g.numpy(), perm)
    grads = {"w1": back(w1.grad, (2, 3, 1, 0)), "b1": b1.grad.numpy()}
    grads["last"] = back(last.grad, (2, 3, 1, 0))
    return d_weight.item(), grads


@functools.partial(jax.jit, static_argnums=(4,))
def _term_grads(params, disc, z, x, g_scale):
    """d nll / d params and d g_loss / d params, separately."""
    return tuple(
        jax.grad(lambda p, i=i: _jax_terms(p, disc, z, x, g_scale)[i])(params) for i in (0, 1)
    )


@pytest.mark.parametrize("g_scale", [1.0, 1e-9], ids=["unclamped", "clamped"])
def test_adaptive_weight_on_toy_decoder_matches_torch(g_scale):
    params, disc, z, x = _toy()
    disc_weight = 0.8
    fn = jax.jit(jax.value_and_grad(_total, has_aux=True), static_argnums=(4, 5))
    (_, lam), grads = fn(params, disc, z, x, g_scale, disc_weight)
    ref_lam, ref_grads = _torch_total(params, disc, z, x, g_scale, disc_weight)
    np.testing.assert_allclose(lam, ref_lam, rtol=1e-5)
    for name in params:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-4, atol=1e-5)
    # Closed form from the two gradients w.r.t. the last kernel.
    nll_g, g_g = (np.asarray(g["last"]) for g in _term_grads(params, disc, z, x, g_scale))
    ratio = np.linalg.norm(nll_g) / (np.linalg.norm(g_g) + 1e-4)
    if g_scale == 1.0:
        assert 1e-2 < ratio < 1e4
        np.testing.assert_allclose(lam, disc_weight * ratio, rtol=1e-5)
    else:
        assert ratio > 1e4 and float(lam) == pytest.approx(disc_weight * 1e4, rel=1e-6)


def _undetached(a, b, w):
    """The adaptive weight without its stop-gradient (to show that the check below can fail)."""
    norm = lambda t: jnp.sqrt(jnp.sum(jnp.square(t)))
    return jnp.clip(norm(a) / (norm(b) + 1e-4), 0.0, 1e4) * w


def test_no_gradient_flows_through_the_adaptive_weight():
    params, disc, z, x = _toy()

    @jax.jit
    def gradients(params):
        total = lambda p, fn: _total(p, disc, z, x, 1.0, 1.0, fn)
        grads, lam = jax.grad(total, has_aux=True)(params, adv.adaptive_weight)
        leaky, _ = jax.grad(total, has_aux=True)(params, _undetached)
        return grads, lam, leaky

    grads, lam, leaky = gradients(params)
    g_nll, g_gen = _term_grads(params, disc, z, x, 1.0)
    for name in params:  # lambda acts as a constant: d/dp (nll + lambda g) = d nll + lambda d g
        np.testing.assert_allclose(
            grads[name], g_nll[name] + lam * g_gen[name], rtol=1e-5, atol=1e-4
        )  # entries up to about 10
    # Without the stop-gradient the second-order terms would change the gradient.
    leak = np.abs(np.asarray(leaky["w1"]) - np.asarray(grads["w1"])).max()
    assert leak > 1e-2, leak  # about 0.11 here


def test_adaptive_weight_edge_cases_and_pytrees():
    a = jnp.full((2, 3), 2.0)  # norm sqrt(24)
    zero = jnp.zeros((2, 3))
    assert float(adv.adaptive_weight(a, zero, 1.0)) == 1e4  # |g| = 0: clamped at 1e4
    assert float(adv.adaptive_weight(zero, a, 3.0)) == 0.0
    expected = math.sqrt(24) / (math.sqrt(24 + 24) + 1e-4) * 0.5
    got = adv.adaptive_weight({"w": a}, {"w": a, "b": a}, 0.5)  # norms over every leaf
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    bf = adv.adaptive_weight(a.astype(jnp.bfloat16), a.astype(jnp.bfloat16), jnp.float32(1.0))
    np.testing.assert_allclose(bf, math.sqrt(24) / (math.sqrt(24) + 1e-4), rtol=1e-6)
