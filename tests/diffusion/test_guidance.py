"""Classifier-free guidance: the pair model, the guided wrapper, and guidance rescale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.diffusion import (
    NoiseSchedule,
    classifier_free_guidance,
    guidance_pair_fn,
    guide,
    rescale_guided,
    sample,
)


def _model(calls):
    def model_fn(x, t, cond):
        calls.append(x.shape[0])
        # Depends on x, t and both leaves of a dict condition.
        return x * cond["scale"][:, None] + cond["shift"] + t[:, None].astype(jnp.float32)

    return model_fn


def _inputs():
    x = jnp.arange(6.0).reshape(3, 2)  # [B=3, 2]
    t = jnp.array([1, 2, 3], jnp.int32)
    cond = {"scale": jnp.array([2.0, 3.0, 4.0]), "shift": jnp.ones((3, 2))}
    uncond = {"scale": jnp.zeros((1,)), "shift": jnp.zeros((1, 2))}  # broadcast null condition
    return x, t, cond, uncond


def test_one_model_call_on_doubled_batch_and_formula():
    calls = []
    x, t, cond, uncond = _inputs()
    f = jax.jit(lambda x, t, s: classifier_free_guidance(_model(calls), cond, uncond, s)(x, t))
    out = f(x, t, jnp.float32(7.5))
    assert calls == [6]  # traced once, on [x; x]
    e_c = x * cond["scale"][:, None] + 1.0 + t[:, None]
    e_u = 0.0 * x + t[:, None]
    np.testing.assert_allclose(out, e_u + 7.5 * (e_c - e_u), rtol=1e-6)
    # A new (traced) guidance scale reuses the compiled program.
    np.testing.assert_allclose(f(x, t, jnp.float32(0.0)), e_u, atol=1e-5)
    assert calls == [6] and f._cache_size() == 1


def test_scale_one_is_exactly_conditional():
    x, t, cond, uncond = _inputs()
    eps_fn = classifier_free_guidance(_model([]), cond, uncond, 1.0)
    e_c = _model([])(x, t, cond)
    assert np.array_equal(np.asarray(jax.jit(eps_fn)(x, t)), np.asarray(e_c))


def test_mismatched_uncond_raises():
    x, t, cond, _ = _inputs()
    with pytest.raises(ValueError, match="does not match"):
        classifier_free_guidance(
            _model([]), cond, {"scale": jnp.zeros((2,)), "shift": jnp.zeros((3, 2))}, 2.0
        )


def test_rescale_matches_diffusers():
    import torch
    from diffusers.guiders.guider_utils import rescale_noise_cfg

    rng = np.random.default_rng(0)
    cond = rng.standard_normal((3, 4, 4, 2)).astype(np.float32)
    uncond = (0.5 * rng.standard_normal(cond.shape)).astype(np.float32)
    f = jax.jit(guide)
    for scale, rescale in [(7.5, 0.7), (3.0, 1.0), (1.5, 0.0)]:
        guided_t = torch.from_numpy(uncond + scale * (cond - uncond))
        want = rescale_noise_cfg(guided_t, torch.from_numpy(cond), rescale).numpy()
        got = f(jnp.asarray(cond), jnp.asarray(uncond), scale, rescale)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Full rescale restores the conditional prediction's per-example std.
    full = f(jnp.asarray(cond), jnp.asarray(uncond), 7.5, 1.0)
    np.testing.assert_allclose(full.std(axis=(1, 2, 3)), cond.std(axis=(1, 2, 3)), rtol=1e-5)


def test_rescale_leaves_constant_outputs_finite():
    cond = jnp.ones((2, 3))
    out = rescale_guided(jnp.full((2, 3), 2.0), cond, 0.5)
    np.testing.assert_array_equal(out, 2.0)


def test_sample_with_a_pair_equals_the_guided_wrapper():
    x, t, cond, uncond = _inputs()
    sched = NoiseSchedule.create("scaled_linear", 100, 0.00085, 0.012)
    model = lambda x, t, c: 0.1 * _model([])(x, t, c) / 100.0
    run = jax.jit(
        lambda s, r: (
            sample(
                guidance_pair_fn(model, cond, uncond),
                x,
                sched,
                "dpmpp_2m",
                6,
                guidance_scale=s,
                guidance_rescale=r,
            ),
            sample(classifier_free_guidance(model, cond, uncond, s, r), x, sched, "dpmpp_2m", 6),
        )
    )
    for s, r in [(1.0, 0.0), (5.0, 0.5)]:
        paired, wrapped = run(s, r)
        np.testing.assert_allclose(paired, wrapped, rtol=1e-6, atol=1e-6)
    # Scale 1 is the conditional model alone.
    cond_only = sample(lambda x, t: model(x, t, cond), x, sched, "dpmpp_2m", 6)
    np.testing.assert_allclose(run(1.0, 0.0)[0], cond_only, rtol=1e-5, atol=1e-6)
    assert not np.allclose(run(5.0, 0.0)[0], cond_only, atol=1e-3)


def test_pair_and_guidance_scale_go_together():
    x, _, cond, uncond = _inputs()
    sched = NoiseSchedule.create("linear", 10)
    pair_fn = guidance_pair_fn(_model([]), cond, uncond)
    with pytest.raises(ValueError, match="pass guidance_scale"):
        sample(pair_fn, x, sched, "ddim", 2)
    with pytest.raises(ValueError, match="must return .cond_output, uncond_output"):
        sample(lambda x, t: x, x, sched, "ddim", 2, guidance_scale=2.0)
