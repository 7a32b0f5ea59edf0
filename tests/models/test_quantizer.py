"""VectorQuantizer against a torch version of the reference; straight-through through VQModel."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ldm_jax.models.quantizer import VectorQuantizer, code_counts
from ldm_jax.models.vq_autoencoder import VQModel

N_EMBED, DIM, BETA = 12, 3, 0.25


def _torch_reference(z, codes, w, legacy, ema):
    """taming's `VectorQuantizer2.forward` (no remap) in torch, plus sum(quant * w) for gradients.

    Returns loss, indices, quant, d(loss + sum(quant * w))/dz and d(...)/d codebook.
    """
    z = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    e = torch.tensor(codes, dtype=torch.float64, requires_grad=True)
    flat = z.reshape(-1, DIM)
    idx = ((flat[:, None, :] - e[None]) ** 2).sum(-1).argmin(1)
    z_q = e[idx].reshape(z.shape)
    commit = torch.mean((z - z_q.detach()) ** 2)
    codebook = torch.mean((z_q - z.detach()) ** 2)
    if ema:
        loss = BETA * commit
    else:
        loss = commit + BETA * codebook if legacy else BETA * commit + codebook
    quant = z + (z_q - z).detach()
    (loss + (quant * torch.tensor(w, dtype=torch.float64)).sum()).backward()
    as_np = lambda t: t.detach().numpy()
    e_grad = np.zeros(codes.shape) if e.grad is None else as_np(e.grad)  # None: no path (ema)
    return as_np(loss), as_np(idx).reshape(z.shape[:-1]), as_np(quant), as_np(z.grad), e_grad


@pytest.mark.parametrize(
    "legacy,ema", [(True, False), (False, False), (True, True)], ids=["legacy", "fixed", "ema"]
)
def test_loss_quant_and_gradients_match_torch_reference(legacy, ema):
    vq = VectorQuantizer(N_EMBED, DIM, beta=BETA, legacy=legacy, ema=ema)
    codes = jax.random.normal(jax.random.PRNGKey(1), (N_EMBED, DIM))
    z = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 4, DIM))
    w = jax.random.normal(jax.random.PRNGKey(3), z.shape)

    def objective(params, z):
        q = vq.apply({"params": params}, z)
        return q.loss + jnp.sum(q.quant * w), q

    params = {"embedding": {"embedding": codes}}
    grad_fn = jax.jit(jax.value_and_grad(objective, argnums=(0, 1), has_aux=True))
    (_, q), (g_params, g_z) = grad_fn(params, z)
    loss, idx, quant, gz_ref, ge_ref = _torch_reference(
        np.asarray(z), np.asarray(codes), np.asarray(w), legacy, ema
    )
    np.testing.assert_array_equal(q.indices, idx)
    np.testing.assert_allclose(q.loss, loss, rtol=1e-5)
    np.testing.assert_allclose(q.quant, quant, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_z, gz_ref, rtol=1e-5, atol=1e-7)
    ge = g_params["embedding"]["embedding"]
    np.testing.assert_allclose(ge, ge_ref, rtol=1e-5, atol=1e-7)
    if ema:  # the codebook is left to the EMA update: exactly zero gradient
        assert not np.any(np.asarray(ge))
        mse = np.mean((np.asarray(quant) - np.asarray(z)) ** 2)
        np.testing.assert_allclose(q.loss, BETA * mse, rtol=1e-5)
    else:
        assert np.abs(ge).max() > 1e-3


def test_straight_through_is_identity_and_counts_histogram():
    vq = VectorQuantizer(N_EMBED, DIM)
    params = {"embedding": {"embedding": jax.random.normal(jax.random.PRNGKey(0), (N_EMBED, DIM))}}
    z = jax.random.normal(jax.random.PRNGKey(4), (2, 5, 5, DIM))
    jac = jax.jit(jax.jacobian(lambda z: vq.apply({"params": params}, z).quant))(z)
    np.testing.assert_array_equal(jac.reshape(z.size, z.size), np.eye(z.size))
    q = jax.jit(lambda z: vq.apply({"params": params}, z))(z)
    expected = np.bincount(np.asarray(q.indices).ravel(), minlength=N_EMBED)
    np.testing.assert_array_equal(q.counts, expected)
    assert q.counts.dtype == jnp.float32
    np.testing.assert_array_equal(code_counts(jnp.array([[0, 2], [2, 2]]), 4), [1, 0, 3, 0])


def _tiny_vq():
    return VQModel(
        ch=8,
        ch_mult=(1,),
        num_res_blocks=1,
        z_channels=4,
        embed_dim=DIM,
        n_embed=N_EMBED,
        resolution=8,
        num_groups=4,
    )


def _random_params(model, x):
    """Parameters with fan-in scaled normal values from numpy (a flax init of even this tiny
    model compiles many initialiser programs and costs seconds)."""
    shapes = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), x))["params"]
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        noise = rng.standard_normal(leaf.shape).astype(np.float32)
        if path[-1].key == "scale":
            return jnp.asarray(1.0 + 0.1 * noise)
        if len(leaf.shape) == 1:
            return jnp.asarray(0.1 * noise)
        return jnp.asarray(noise / np.sqrt(np.prod(leaf.shape[:-1])))

    return jax.tree_util.tree_map_with_path(fill, shapes)


def test_vq_model_forward_with_codes_and_straight_through_to_the_encoder():
    """forward_with_codes = __call__ + h; the ema loss is commitment only; the reconstruction's
    gradient reaches the encoder as the encoder's VJP of d(rec)/d(quant) (one compiled program)."""
    model = _tiny_vq()
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    w = jax.random.normal(jax.random.PRNGKey(1), x.shape)
    params = _random_params(model, x)
    assert params["quantize"]["embedding"]["embedding"].shape == (N_EMBED, DIM)

    @jax.jit
    def run(params):
        apply = lambda p, *a, method, **k: model.apply({"params": p}, *a, method=method, **k)
        forward = lambda p, ema: apply(p, x, method=model.forward_with_codes, ema=ema)
        codebook_grad = lambda ema: jax.grad(lambda p: forward(p, ema).loss)(params)["quantize"]
        rec_grads = jax.grad(lambda p: jnp.sum(forward(p, False).x_rec * w))(params)
        # Reference: the decoder's gradient at quant, pulled back through the encoder alone.
        h, encoder_vjp = jax.vjp(lambda p: apply(p, x, method=model.encode_to_prequant), params)
        quant = apply(params, h, method=lambda m, h: m.quantize(h)).quant
        g_quant = jax.grad(lambda q: jnp.sum(apply(params, q, method=model.decode) * w))(quant)
        return dict(
            out=forward(params, False),
            out_ema=forward(params, True),
            call=model.apply({"params": params}, x),
            h=h,
            code_grad=codebook_grad(False)["embedding"]["embedding"],
            code_grad_ema=codebook_grad(True)["embedding"]["embedding"],
            rec_grads=rec_grads,
            expected=encoder_vjp(g_quant)[0],
        )

    r = run(params)
    rec, loss, ind = r["call"]
    out, out_ema = r["out"], r["out_ema"]
    for o in (out, out_ema):
        np.testing.assert_array_equal(o.x_rec, rec)
        np.testing.assert_array_equal(o.indices, ind)
        np.testing.assert_allclose(o.h, r["h"], atol=1e-6)
    np.testing.assert_allclose(out.loss, loss, rtol=1e-6)
    # Legacy loss (1 + beta) ||h - e||^2 against the EMA form beta ||h - e||^2.
    np.testing.assert_allclose(out_ema.loss, loss * BETA / (1 + BETA), rtol=1e-5)
    assert np.abs(r["code_grad"]).max() > 1e-6
    assert not np.any(np.asarray(r["code_grad_ema"]))

    grads, expected = r["rec_grads"], r["expected"]
    for name in ("encoder", "quant_conv"):
        for got, ref in zip(*map(jax.tree.leaves, (grads[name], expected[name])), strict=True):
            scale = np.abs(ref).max()
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * scale)
    assert np.abs(grads["quant_conv"]["kernel"]).max() > 1e-4  # the encoder is really reached
    assert not np.any(np.asarray(grads["quantize"]["embedding"]["embedding"]))  # only via loss
