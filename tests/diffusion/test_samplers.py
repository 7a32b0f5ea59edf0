"""Samplers: timestep grids, the DDPM posterior, and sampling with exact eps functions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.diffusion import (
    STATIC_ARGNAMES,
    NoiseSchedule,
    sample,
)

SCHED = NoiseSchedule.create("linear", 1000)
jit_sample = jax.jit(sample, static_argnames=STATIC_ARGNAMES)


def point_mass_eps(mu, schedule=SCHED):
    """Exact eps for data that is always `mu`."""

    def eps_fn(x, t):
        assert t.dtype == jnp.int32 and t.shape == (x.shape[0],)
        ab = schedule.alphas_cumprod[t].reshape((-1,) + (1,) * (x.ndim - 1))
        return (x - jnp.sqrt(ab) * mu) / jnp.sqrt(1 - ab)

    return eps_fn


def gaussian_eps(mu, s, schedule=SCHED):
    """Exact eps for data ~ N(mu, s^2) (per dimension)."""

    def eps_fn(x, t):
        ab = schedule.alphas_cumprod[t][:, None]
        return jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * mu) / (ab * s**2 + 1 - ab)

    return eps_fn


def test_ddim_eta_zero_is_deterministic_and_eta_positive_is_not():
    x_T = jax.random.normal(jax.random.key(0), (4, 3))
    eps_fn = gaussian_eps(0.3, 0.8)
    run = lambda eta, seed: jit_sample(
        eps_fn, x_T, SCHED, "ddim", 20, eta, rng=jax.random.key(seed)
    )
    np.testing.assert_array_equal(run(0.0, 1), run(0.0, 2))
    assert float(jnp.max(jnp.abs(run(0.5, 1) - run(0.5, 2)))) > 1e-2
    np.testing.assert_array_equal(run(0.5, 1), run(0.5, 1))


@pytest.mark.parametrize(
    "sampler,num_steps,spacing",
    [
        ("ddim", 1, "trailing"),
        ("ddim", 10, "leading"),
        ("ddim", 50, "trailing"),
        ("ddpm", 1, "trailing"),
        ("ddpm", 25, "linspace"),
        ("ddpm", 1000, "leading"),
    ],
)
def test_point_mass_is_recovered(sampler, num_steps, spacing):
    mu = jnp.array([0.5, -1.0, 2.0])
    x_T = jax.random.normal(jax.random.key(3), (8, 2, 2, 3))  # [B, H, W, C]
    out = jit_sample(
        point_mass_eps(mu),
        x_T,
        SCHED,
        sampler,
        num_steps,
        timestep_spacing=spacing,
        rng=jax.random.key(4),
        set_alpha_to_one=True,
    )
    assert out.shape == x_T.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, jnp.broadcast_to(mu, x_T.shape), atol=1e-4)


def test_ddim_default_last_step_ends_at_alphas_cumprod_zero():
    mu = 0.5
    x_T = jax.random.normal(jax.random.key(5), (16, 1))
    out = jit_sample(point_mass_eps(mu), x_T, SCHED, "ddim", 10, timestep_spacing="trailing")
    # With exact eps, x0 is predicted exactly and eps stays eps(x_T, 999) along the trajectory.
    ab_T, ab_0 = SCHED.alphas_cumprod[999], SCHED.alphas_cumprod[0]
    eps_T = (x_T - jnp.sqrt(ab_T) * mu) / jnp.sqrt(1 - ab_T)
    np.testing.assert_allclose(out, jnp.sqrt(ab_0) * mu + jnp.sqrt(1 - ab_0) * eps_T, atol=1e-4)
    assert float(jnp.max(jnp.abs(out - mu))) > 1e-3  # ... which is not mu itself


@pytest.mark.parametrize(
    "sampler,num_steps",
    [("ddpm", 1000), ("ddim", 250)],
)
def test_gaussian_data_moments(sampler, num_steps):
    mu, s = 0.7, 0.5
    x_T = jax.random.normal(jax.random.key(0), (4096, 2))
    out = jit_sample(gaussian_eps(mu, s), x_T, SCHED, sampler, num_steps, rng=jax.random.key(1))
    assert abs(float(out.mean()) - mu) < 0.02
    assert abs(float(out.std()) - s) < 0.02


def test_changing_eta_does_not_recompile():
    traces = []

    def eps_fn(x, t):
        traces.append(1)
        return point_mass_eps(0.1)(x, t)

    f = jax.jit(lambda x, eta, key: sample(eps_fn, x, SCHED, "ddim", 10, eta, rng=key))
    x_T = jnp.ones((2, 3))
    outs = [f(x_T, jnp.float32(eta), jax.random.key(0)) for eta in (0.0, 0.3, 1.0)]
    assert len(traces) == 1 and f._cache_size() == 1
    assert not np.allclose(outs[0], outs[2])  # eta did reach the computation


def test_schedule_is_traced_not_baked_in():
    f = jax.jit(
        lambda sch, x: sample(point_mass_eps(0.2, sch), x, sch, "ddim", 5, set_alpha_to_one=True)
    )
    x_T = jnp.ones((2, 1))
    for kind in ("linear", "scaled_linear"):
        np.testing.assert_allclose(f(NoiseSchedule.create(kind, 100), x_T), 0.2, atol=1e-4)
    assert f._cache_size() == 1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sampler="euler"), "valid samplers.*ddim.*ddpm"),
        (dict(sampler="ddpm"), "pass rng"),
        (dict(eta=-0.1), "eta must be >= 0"),
        (dict(timestep_spacing="uniform"), "valid.*leading"),
        (dict(num_steps=2000), "num_steps must be in"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(point_mass_eps(0.0), jnp.zeros((1, 2)), SCHED, **kwargs)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_clip_sample_clips_the_x0_prediction(sampler):
    x_T = jax.random.normal(jax.random.key(6), (4, 2))
    out = jit_sample(
        point_mass_eps(3.0),
        x_T,
        SCHED,
        sampler,
        10,
        rng=jax.random.key(7),
        set_alpha_to_one=True,
        clip_sample=1.0,
    )
    assert float(jnp.max(out)) <= 1.0 + 1e-5 and float(jnp.min(out)) > 0.5
