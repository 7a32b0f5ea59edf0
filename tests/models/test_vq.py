"""VQ first stage: nearest code, straight-through gradient, the legacy loss, VQModel shapes."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.models.quantizer import VectorQuantizer
from ldm_jax.models.vq_autoencoder import VQModel


def _quantizer_and_params(n=16, e=3, legacy=True):
    vq = VectorQuantizer(n, e, beta=0.25, legacy=legacy)
    params = nn.unbox(vq.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, e))))["params"]
    codes = jax.random.normal(jax.random.PRNGKey(1), (n, e))
    return vq, {"embedding": {"embedding": codes}}, np.asarray(codes), params


def test_codebook_init_and_nearest_code():
    vq, params, codes, init_params = _quantizer_and_params()
    table = np.asarray(init_params["embedding"]["embedding"])
    assert table.shape == (16, 3) and np.abs(table).max() <= 1 / 16  # uniform(-1/n, 1/n)
    z = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 5, 3))
    q = vq.apply({"params": params}, z)
    dist = ((np.asarray(z)[..., None, :] - codes) ** 2).sum(-1)  # [2, 4, 5, 16]
    np.testing.assert_array_equal(q.indices, dist.argmin(-1))
    assert q.indices.shape == (2, 4, 5) and q.indices.dtype == jnp.int32
    np.testing.assert_allclose(q.quant, codes[dist.argmin(-1)], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("legacy", [True, False])
def test_loss_closed_form_and_straight_through_gradient(legacy):
    vq, params, codes, _ = _quantizer_and_params(legacy=legacy)
    z = jax.random.normal(jax.random.PRNGKey(3), (2, 3, 3, 3))
    q = vq.apply({"params": params}, z)
    mse = np.mean((np.asarray(q.quant) - np.asarray(z)) ** 2)
    np.testing.assert_allclose(q.loss, 1.25 * mse, rtol=1e-5)  # (1 + beta) * ||sg(e)-z||^2

    # Straight-through: d quant / d z is the identity.
    w = jax.random.normal(jax.random.PRNGKey(4), z.shape)
    grad_z = jax.grad(lambda z: jnp.sum(vq.apply({"params": params}, z).quant * w))(z)
    np.testing.assert_allclose(grad_z, w, rtol=1e-6)
    # Loss gradients: legacy puts beta on the codebook term, the fixed form on the commitment.
    gz = jax.grad(lambda z: vq.apply({"params": params}, z).loss)(z)
    ge = jax.grad(lambda p: vq.apply({"params": p}, z).loss)(params)["embedding"]["embedding"]
    diff = (np.asarray(z) - np.asarray(q.quant)) * 2 / z.size
    commit_w, code_w = (1.0, 0.25) if legacy else (0.25, 1.0)
    np.testing.assert_allclose(gz, commit_w * diff, rtol=1e-5, atol=1e-8)
    expected_ge = np.zeros_like(codes)
    np.add.at(expected_ge, np.asarray(q.indices).ravel(), -code_w * diff.reshape(-1, 3))
    np.testing.assert_allclose(ge, expected_ge, rtol=1e-5, atol=1e-8)


def _tiny_vq(**kw):
    base = dict(
        ch=32,
        ch_mult=(1, 2),
        num_res_blocks=1,
        z_channels=4,
        embed_dim=3,
        n_embed=10,
        resolution=16,
        attn_resolutions=(8,),
    )
    return VQModel(**{**base, **kw})


def test_vq_model_round_trip_and_interfaces():
    model = _tiny_vq()
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
    params = nn.unbox(model.init(jax.random.PRNGKey(1), x))["params"]
    assert params["quant_conv"]["kernel"].shape == (1, 1, 4, 3)  # z_channels -> embed_dim
    assert params["post_quant_conv"]["kernel"].shape == (1, 1, 3, 4)
    assert params["quantize"]["embedding"]["embedding"].shape == (10, 3)
    assert params["encoder"]["conv_out"]["kernel"].shape[-1] == 4  # double_z=False
    apply = lambda method, *a, **k: model.apply({"params": params}, *a, method=method, **k)
    rec, loss, ind = jax.jit(lambda x: model.apply({"params": params}, x))(x)
    assert rec.shape == x.shape and loss.shape == () and ind.shape == (2, 8, 8)
    h = apply(model.encode_to_prequant, x)
    assert h.shape == (2, 8, 8, 3)
    # The LDM decodes pre-quantisation latents: quantise, then decode (== decode_code).
    np.testing.assert_allclose(
        apply(model.decode_latent, h), apply(model.decode_code, ind), atol=1e-5
    )
    np.testing.assert_allclose(
        apply(model.decode_latent, h, force_not_quantize=True), apply(model.decode, h), atol=1e-6
    )


def test_attn_type_none_and_linear_change_only_attention():
    x = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
    shapes = lambda m: jax.eval_shape(m.init, jax.random.PRNGKey(0), x)["params"]
    vanilla, none, linear = (shapes(_tiny_vq(attn_type=t)) for t in ("vanilla", "none", "linear"))
    for enc in (none["encoder"], none["decoder"]):
        assert not [k for k in enc if "attn" in k]
    assert "mid_attn_1" in vanilla["encoder"] and "down_1_attn_0" in vanilla["encoder"]
    assert set(linear["encoder"]["mid_attn_1"]) == {"to_qkv", "to_out"}
    with pytest.raises(ValueError, match="attn_type"):
        shapes(_tiny_vq(attn_type="flash"))
