"""Parity of imported diffusers models against diffusers itself (PyTorch, float32, CPU)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax import interop
from ldm_jax.models.vq_autoencoder import VQModel
from tests.interop import reference as ref
from tests.interop.reference import TOL, max_err, torch


def _eps(unet, params, inputs):
    fn = jax.jit(lambda p, x, t, c, y: unet.apply({"params": p}, x, t, c, y=y))
    return np.asarray(fn(params, inputs["x"], inputs["t"], inputs["context"], inputs.get("y")))


@pytest.mark.parametrize("name", sorted(ref.UNET_CONFIGS))
def test_unet_matches_diffusers_and_round_trips(name, tmp_path):
    model = ref.make_unet(name)
    model.save_pretrained(tmp_path / "src")
    unet, params = interop.load_diffusers_unet(str(tmp_path / "src"))
    inputs = ref.unet_inputs(ref.UNET_CONFIGS[name])
    expected = ref.torch_unet_eps(model, inputs)
    got = _eps(unet, params, inputs)
    assert got.shape == expected.shape
    err = max_err(got, expected)
    print(f"unet {name}: max abs error {err:.2e}")
    assert err < TOL, err

    # Export -> diffusers load: same tensors, same outputs.
    interop.export_diffusers(unet, params, str(tmp_path / "out"))
    back = ref.diffusers.UNet2DConditionModel.from_pretrained(str(tmp_path / "out")).eval()
    want, have = model.state_dict(), back.state_dict()
    assert sorted(want) == sorted(have)
    for k in want:
        assert max_err(want[k].numpy(), have[k].numpy()) == 0.0, k
    assert max_err(ref.torch_unet_eps(back, inputs), expected) < TOL


def _image(channels: int, size: int = 16, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (2, size, size, channels)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(ref.VAE_CONFIGS))
def test_autoencoder_kl_matches_diffusers_and_round_trips(name, tmp_path):
    model = ref.make_vae(name)
    model.save_pretrained(tmp_path / "src")
    ae, params = interop.load_diffusers_autoencoder(str(tmp_path / "src"))
    x = _image(ref.VAE_CONFIGS[name].get("in_channels", 3))
    post = jax.jit(lambda p, x: ae.apply({"params": p}, x, method=ae.encode))(params, x)
    with torch.no_grad():
        dist = model.encode(ref.nchw(x)).latent_dist
    err_mean = max_err(post.mean, ref.nhwc(dist.mean))
    err_logvar = max_err(post.logvar, ref.nhwc(dist.logvar))
    z = np.asarray(post.mean)
    dec = jax.jit(lambda p, z: ae.apply({"params": p}, z, method=ae.decode))(params, z)
    with torch.no_grad():
        expected_dec = ref.nhwc(model.decode(ref.nchw(z)).sample)
    err_dec = max_err(dec, expected_dec)
    print(f"{name}: mean {err_mean:.2e} logvar {err_logvar:.2e} decode {err_dec:.2e}")
    assert max(err_mean, err_logvar, err_dec) < TOL

    interop.export_diffusers(ae, params, str(tmp_path / "out"), scaling_factor=0.5)
    back = ref.diffusers.AutoencoderKL.from_pretrained(str(tmp_path / "out")).eval()
    assert back.config.scaling_factor == 0.5
    want, have = model.state_dict(), back.state_dict()
    assert sorted(want) == sorted(have)
    for k in want:
        assert max_err(want[k].numpy(), have[k].numpy()) == 0.0, k


@pytest.mark.parametrize("name", sorted(ref.VQ_CONFIGS))
def test_vq_model_matches_diffusers_and_round_trips(name, tmp_path):
    model = ref.make_vae(name)
    model.save_pretrained(tmp_path / "src")
    vq, params = interop.load_diffusers_autoencoder(str(tmp_path / "src"))
    assert isinstance(vq, VQModel)
    x = _image(3)
    h = jax.jit(lambda p, x: vq.apply({"params": p}, x, method=vq.encode_to_prequant))(params, x)
    q = jax.jit(lambda p, x: vq.apply({"params": p}, x, method=vq.encode))(params, x)
    dec = jax.jit(lambda p, h: vq.apply({"params": p}, h, method=vq.decode_latent))(params, h)
    with torch.no_grad():
        h_ref = model.encode(ref.nchw(x)).latents
        _, _, (_, _, idx_ref) = model.quantize(h_ref)
        dec_ref = model.decode(h_ref).sample
    err_h = max_err(h, ref.nhwc(h_ref))
    idx = np.asarray(q.indices)
    np.testing.assert_array_equal(idx.reshape(-1), idx_ref.numpy().reshape(-1))
    err_dec = max_err(dec, ref.nhwc(dec_ref))
    print(f"{name}: prequant {err_h:.2e} decode {err_dec:.2e}, indices equal")
    assert max(err_h, err_dec) < TOL

    interop.export_diffusers(vq, params, str(tmp_path / "out"))
    back = ref.diffusers.VQModel.from_pretrained(str(tmp_path / "out")).eval()
    want, have = model.state_dict(), back.state_dict()
    assert sorted(want) == sorted(have)
    for k in want:
        assert max_err(want[k].numpy(), have[k].numpy()) == 0.0, k


def test_export_of_our_own_unet_loads_in_diffusers(tmp_path):
    """Something trained here (random init) -> diffusers -> same eps."""
    from ldm_jax.models.unet import UNetModel

    unet = UNetModel(
        model_channels=16,
        out_channels=4,
        num_res_blocks=1,
        attention_resolutions=(1, 2),
        channel_mult=(1, 2),
        num_head_channels=8,
        context_dim=8,
        num_groups=8,
        legacy=False,
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
    t = np.array([10], np.int32)
    c = rng.standard_normal((1, 3, 8)).astype(np.float32)
    init = jax.jit(lambda k: nn.unbox(unet.init(k, x, t, jnp.asarray(c))))
    params = init(jax.random.PRNGKey(0))["params"]
    params = jax.tree.map(
        lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params
    )
    interop.export_diffusers(unet, params, str(tmp_path / "u"))
    back = ref.diffusers.UNet2DConditionModel.from_pretrained(str(tmp_path / "u")).eval()
    got = ref.torch_unet_eps(back, {"x": x, "t": t, "context": c})
    ours = jax.jit(lambda p, x, t, c: unet.apply({"params": p}, x, t, c))(params, x, t, c)
    assert max_err(got, ours) < TOL
