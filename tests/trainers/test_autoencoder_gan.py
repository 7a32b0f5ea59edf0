"""Stage 1 with the paper's loss: the compiled step against a brute-force reference.

The reference here differentiates the whole loss with `jax.grad` through the autoencoder (the
adaptive weight from `jax.grad` of each term w.r.t. the decoder's last kernel, then stopped), so
it shares no code path with the step's single VJP and last-layer kernel cotangents.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ldm_jax.config import builders, small_first_stages
from ldm_jax.losses import adversarial, vq_codebook
from ldm_jax.losses.lpips import LPIPS, load_lpips_params
from ldm_jax.trainers import autoencoder_gan
from ldm_jax.trainers.autoencoder import train_autoencoder
from ldm_jax.trainers.last_layer import capture_last_layer_input, kernel_gradient
from ldm_jax.training.logging import MetricWriter
from ldm_jax.workdir import layout
from ldm_jax.workdir.reader import restore_state

SIZE = 16


def _config(kind: str = "kl", **loss):
    """A tiny sweep config: f=4 on 16x16 RGB, the paper loss with `loss` changes."""
    c = small_first_stages.get_config(kind, 4, "noto_emoji")
    c.data.image_size = SIZE
    c.model.first_stage.update(resolution=SIZE, ch=32)
    c.autoencoder_train.update(batch_size=4, l2_weight=0.5)
    c.autoencoder_train.loss.update(disc_num_layers=2, disc_ndf=8, **loss)
    return c


def _state(config, ae_tx, disc_tx):
    ae = builders.build_autoencoder(config)
    loss_cfg = autoencoder_gan.loss_config(config.autoencoder_train)
    init = autoencoder_gan.state_init_fn(ae, config, loss_cfg, ae_tx, disc_tx)
    return ae, loss_cfg, jax.jit(lambda r: nn.unbox(init(r)))(jax.random.PRNGKey(0))


def _images(seed: int = 1) -> jax.Array:
    return jax.random.uniform(jax.random.PRNGKey(seed), (4, SIZE, SIZE, 3), minval=-1, maxval=1)


def test_last_layer_kernel_gradient_matches_full_autodiff():
    config = _config()
    ae = builders.build_autoencoder(config)
    x = _images()
    params = nn.unbox(ae.init(jax.random.PRNGKey(0), x)["params"])
    target = jax.random.normal(jax.random.PRNGKey(2), x.shape)

    def loss_of_output(x_rec):
        return jnp.sum(jnp.abs(x_rec - target)) + jnp.sum(jnp.sin(x_rec) ** 2)

    store = {}
    with nn.intercept_methods(capture_last_layer_input(store)):
        x_rec, _ = ae.apply({"params": params}, x)
    cotangent = jax.grad(loss_of_output)(x_rec)
    got = kernel_gradient(store["input"], params["decoder"]["conv_out"]["kernel"], cotangent)
    full = jax.grad(lambda p: loss_of_output(ae.apply({"params": p}, x)[0]))(params)
    want = full["decoder"]["conv_out"]["kernel"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(jnp.abs(want).max()))


def _reference(ae, config, loss_cfg, state, x, rng, disc_factor):
    """(loss, grads) of the paper's KL loss by brute-force autodiff (see the module docstring)."""
    lpips_net = LPIPS(net=loss_cfg.lpips_net)
    lpips_params = load_lpips_params(loss_cfg.lpips_net)
    tcfg = config.autoencoder_train
    disc = autoencoder_gan.build_discriminator(config, loss_cfg)
    variables = {"params": state.disc_params, **state.disc_state}

    def terms(p):
        x_rec, posterior = ae.apply({"params": p}, x, rng)
        diff = x_rec - x
        rec = jnp.abs(diff) + tcfg.l2_weight * diff**2
        perceptual = lpips_net.apply({"params": lpips_params}, x, x_rec)
        rec = rec + loss_cfg.perceptual_weight * perceptual[:, None, None, None]
        logvar = state.loss_params["logvar"]
        nll = jnp.sum(rec / jnp.exp(logvar) + logvar) / x.shape[0]
        kl = jnp.mean(posterior.kl())
        logits, _ = disc.apply(variables, x_rec, train=True, mutable=list(state.disc_state))
        return nll, kl, -jnp.mean(logits)

    def kernel_grad(i):
        return jax.grad(lambda p: terms(p)[i])(state.params)["decoder"]["conv_out"]["kernel"]

    g_nll, g_gan = kernel_grad(0), kernel_grad(2)
    d_weight = jnp.linalg.norm(g_nll) / (jnp.linalg.norm(g_gan) + 1e-4)
    d_weight = jnp.clip(d_weight, 0.0, 1e4) * loss_cfg.disc_weight * disc_factor

    def total(p):
        nll, kl, g = terms(p)
        return nll + tcfg.kl_weight * kl + jax.lax.stop_gradient(d_weight) * g

    return jax.value_and_grad(total)(state.params)


def _reference_disc(config, loss_cfg, state, x, x_rec):
    """(loss, grads) of the discriminator's hinge loss on (x, x~) by autodiff.

    As in the reference's training step, the generator's pass D(x~) comes first and leaves its
    statistics (BatchNorm's running averages; ActNorm's data-dependent initialisation on x~)
    for the discriminator's update."""
    disc = autoencoder_gan.build_discriminator(config, loss_cfg)
    names = list(state.disc_state)
    variables = {"params": state.disc_params, **state.disc_state}
    _, after_generator = disc.apply(variables, x_rec, train=True, mutable=names)

    def d_loss(p):
        real, s1 = disc.apply({"params": p, **after_generator}, x, train=True, mutable=names)
        fake, _ = disc.apply({"params": p, **s1}, x_rec, train=True, mutable=names)
        return jnp.mean(adversarial.hinge_d_loss(real, fake))

    return jax.value_and_grad(d_loss)(state.disc_params)


def _assert_update_is(old, new, want):
    """new = old - want (SGD with rate 1), to 1e-4 of the largest entry of `want`."""
    got = jax.tree.map(lambda a, b: a - b, old, new)
    scale = max(float(jnp.abs(w).max()) for w in jax.tree.leaves(want))
    for g, w, p in zip(
        jax.tree.leaves(got), jax.tree.leaves(want), jax.tree.leaves(old), strict=True
    ):
        # p - (p - g) also carries float32 rounding of p: allow a few of its ulps.
        atol = 1e-4 * scale + 4 * float(jnp.spacing(jnp.abs(p).max()))
        np.testing.assert_allclose(g, w, rtol=0, atol=atol)


def _leaves_equal(a, b) -> bool:
    return all(
        np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.parametrize("disc_norm", ["batch", "actnorm"])
def test_kl_step_matches_brute_force_before_and_at_disc_start(disc_norm):
    """Step 0 (before disc_start=1): nothing from the discriminator, which stays untouched with
    its optimizer moments; step 1: the adaptive-weighted GAN term and the discriminator's own
    hinge update, both equal to autodiff of the reference formulas."""
    # AlexNet: the same code, less compile.
    config = _config(disc_start=1, lpips_net="alexnet", disc_norm=disc_norm)
    sgd = optax.sgd(1.0)  # new params = params - grads: the step's gradients, exactly
    ae, loss_cfg, state0 = _state(config, sgd, sgd)
    step = jax.jit(autoencoder_gan.make_train_step(ae, config, loss_cfg, sgd, sgd))
    reference = jax.jit(
        lambda s, x, r, f: _reference(ae, config, loss_cfg, s, x, r, f), static_argnums=()
    )
    x0, x1 = _images(1), _images(2)
    state1, m0 = step(state0, {"image": x0})
    state2, m1 = step(state1, {"image": x1})

    loss0, want0 = reference(state0, x0, jax.random.split(state0.rng)[1], 0.0)
    _assert_update_is(state0.params, state1.params, want0)
    np.testing.assert_allclose(m0["loss"], loss0, rtol=1e-5)
    assert float(m0["g_loss"]) == 0.0 and float(m0["d_weight"]) == 0.0
    assert float(m0["disc_factor"]) == 0.0
    assert _leaves_equal(state0.disc_params, state1.disc_params)
    assert _leaves_equal(state0.disc_opt_state, state1.disc_opt_state)
    assert _leaves_equal(state0.disc_state, state1.disc_state)

    rng1 = jax.random.split(state1.rng)[1]
    loss1, want1 = reference(state1, x1, rng1, 1.0)
    _assert_update_is(state1.params, state2.params, want1)
    np.testing.assert_allclose(m1["loss"], loss1, rtol=1e-5)
    assert float(m1["d_weight"]) > 0 and float(m1["disc_factor"]) == 1.0

    x_rec1 = ae.apply({"params": state1.params}, x1, rng1)[0]
    d_loss, d_want = jax.jit(lambda s: _reference_disc(config, loss_cfg, s, x1, x_rec1))(state1)
    _assert_update_is(state1.disc_params, state2.disc_params, d_want)
    np.testing.assert_allclose(m1["disc_loss"], d_loss, rtol=1e-5)
    # BatchNorm's running statistics, or ActNorm's first-batch initialisation.
    assert not _leaves_equal(state1.disc_state, state2.disc_state)


def test_vq_ema_codebook_is_the_ema_of_its_assigned_vectors():
    config = _config("vq", vq_ema_decay=0.9, disc_weight=0.0, perceptual_weight=0.0)
    sgd = optax.sgd(0.1)
    ae, loss_cfg, state = _state(config, sgd, sgd)
    step = jax.jit(autoencoder_gan.make_train_step(ae, config, loss_cfg, sgd, sgd))
    x = _images()
    new, metrics = step(state, {"image": x})
    out = ae.apply({"params": state.params}, x, ema=True, method=ae.forward_with_codes)
    codes = state.params["quantize"]["embedding"]["embedding"]
    want_codes, want_ema = vq_codebook.ema_update(
        codes, state.codebook_ema, out.h.reshape(-1, ae.embed_dim), out.indices.reshape(-1), 0.9
    )
    np.testing.assert_allclose(
        new.params["quantize"]["embedding"]["embedding"], want_codes, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(new.codebook_ema.cluster_size, want_ema.cluster_size, rtol=1e-6)
    assert not np.array_equal(codes, want_codes)
    usage, perplexity = vq_codebook.codebook_usage(out.indices, ae.n_embed)
    np.testing.assert_allclose(metrics["codebook_usage"], usage)
    np.testing.assert_allclose(metrics["perplexity"], perplexity, rtol=1e-6)


def _checkpoint_arrays(workdir) -> list:
    state, _, _ = restore_state(layout.checkpoint_dir(str(workdir), "autoencoder"))
    return jax.tree_util.tree_flatten_with_path(jax.tree.map(np.asarray, state))[0]


def test_training_stops_and_continues_bitwise(tmp_path):
    """Both optimizers, the discriminator's statistics and the log-variance are in the
    checkpoint: 2 steps then 2 more (the GAN on from step 2) equal 4 uninterrupted steps."""
    config = small_first_stages.get_config("kl", 4, "fashion_mnist", "tiny")
    config.autoencoder_train.update(steps=4, checkpoint_every=2, log_every=1)
    config.autoencoder_train.loss.update(disc_start=2, lpips_net="alexnet", learn_logvar=True)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for workdir, plan in ((straight, (4,)), (resumed, (2, 4))):
        workdir.mkdir()
        for steps in plan:
            config.autoencoder_train.steps = steps
            train_autoencoder(config, str(workdir), MetricWriter(str(workdir)))
    got, want = _checkpoint_arrays(resumed), _checkpoint_arrays(straight)
    assert [p for p, _ in got] == [p for p, _ in want]
    names = {jax.tree_util.keystr(p[:1]) for p, _ in want}
    assert {"['disc_params']", "['disc_opt_state']", "['disc_state']", "['loss_params']"} <= names
    for (path, a), (_, b) in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
