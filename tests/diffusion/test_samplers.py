"""`sample`: exact denoisers, prediction types, masks, img2img arguments, and compilation counts."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from ldm_jax.diffusion import STATIC_ARGNAMES, NoiseSchedule, guidance_pair_fn, sample

SCHED = NoiseSchedule.create("linear", 1000)
ALL_SAMPLERS = ("ddim", "ddpm", "plms", "dpmpp_2m")
jit_sample = jax.jit(sample, static_argnames=STATIC_ARGNAMES)


def _ab(schedule, t, ndim):
    return schedule.alphas_cumprod[t].reshape((-1,) + (1,) * (ndim - 1))  # [B, 1, ...]


def point_mass_eps(mu, schedule=SCHED):
    """Exact eps for data that is always `mu`."""

    def eps_fn(x, t):
        assert t.dtype == jnp.int32 and t.shape == (x.shape[0],)
        ab = _ab(schedule, t, x.ndim)
        return (x - jnp.sqrt(ab) * mu) / jnp.sqrt(1 - ab)

    return eps_fn


def gaussian_model(mu, s, prediction_type="epsilon", schedule=SCHED):
    """The exact posterior-mean model for data ~ N(mu, s^2), in any parameterisation."""

    def fn(x, t):
        ab = _ab(schedule, t, x.ndim)
        denom = ab * s**2 + 1 - ab
        eps = jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * mu) / denom
        x0 = mu + jnp.sqrt(ab) * s**2 * (x - jnp.sqrt(ab) * mu) / denom
        v = jnp.sqrt(ab) * eps - jnp.sqrt(1 - ab) * x0
        return {"epsilon": eps, "sample": x0, "v_prediction": v}[prediction_type]

    return fn


@contextlib.contextmanager
def count_compiles(name):
    """Collects XLA compilations (cache hits included) of jitted functions called `name`."""
    seen = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration" and name in kwargs["fun_name"]:
            seen.append(kwargs["fun_name"])

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_ddim_eta_zero_is_deterministic_and_eta_positive_is_not():
    x_T = jax.random.normal(jax.random.key(0), (4, 3))
    eps_fn = gaussian_model(0.3, 0.8)
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
        ("ddim", 50, "trailing"),
        ("ddpm", 1, "trailing"),
        ("ddpm", 25, "linspace"),
        ("ddpm", 1000, "leading"),
        ("plms", 1, "leading"),
        ("plms", 20, "trailing"),
        ("dpmpp_2m", 1, "linspace"),
        ("dpmpp_2m", 20, "leading"),
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
    [("ddpm", 1000), ("ddim", 250), ("plms", 25), ("dpmpp_2m", 25)],
)
def test_gaussian_data_moments(sampler, num_steps):
    mu, s = 0.7, 0.5
    x_T = jax.random.normal(jax.random.key(0), (4096, 2))
    out = jit_sample(gaussian_model(mu, s), x_T, SCHED, sampler, num_steps, rng=jax.random.key(1))
    assert abs(float(out.mean()) - mu) < 0.02
    assert abs(float(out.std()) - s) < 0.02


@pytest.mark.parametrize("sampler", ["ddim", "plms", "dpmpp_2m"])
def test_prediction_types_give_the_same_samples(sampler):
    x_T = jax.random.normal(jax.random.key(2), (4, 6))
    outs = {
        p: jit_sample(gaussian_model(0.2, 0.6, p), x_T, SCHED, sampler, 10, prediction_type=p)
        for p in ("epsilon", "sample", "v_prediction")
    }
    np.testing.assert_allclose(outs["sample"], outs["epsilon"], atol=1e-4)
    np.testing.assert_allclose(outs["v_prediction"], outs["epsilon"], atol=1e-4)
    assert float(jnp.max(jnp.abs(outs["epsilon"] - x_T))) > 0.1


@pytest.mark.parametrize("sampler", ALL_SAMPLERS)
def test_sweeping_guidance_and_eta_does_not_recompile(sampler):
    traces = []

    def model_fn(x, t, y):
        traces.append(x.shape)
        return gaussian_model(0.0, 1.0)(x, t) + 0.1 * y[:, None]

    labels = jnp.array([1.0, -1.0])
    pair_fn = guidance_pair_fn(model_fn, labels, jnp.zeros((1,)))

    def sweep_target(x, scale, rescale, eta, key):
        return sample(
            pair_fn,
            x,
            SCHED,
            sampler,
            8,
            eta,
            rng=key,
            guidance_scale=scale,
            guidance_rescale=rescale,
        )

    f = jax.jit(sweep_target)
    x_T = jax.random.normal(jax.random.key(0), (2, 5))
    key = jax.random.key(1)
    f(x_T, 1.0, 0.0, 0.0, key)  # compile once
    with count_compiles("sweep_target") as compiles:
        outs = [
            f(x_T, s, r, e, key)
            for s, r, e in [(1.0, 0.0, 0.5), (4.0, 0.0, 0.0), (7.5, 0.7, 1.0), (0.0, 1.0, 0.2)]
        ]
        f(x_T, 1.0, 0.0, 0.0, key).block_until_ready()
    assert compiles == [] and f._cache_size() == 1
    assert traces == [(4, 5)]  # the model is traced once, on the doubled batch
    assert not np.allclose(outs[0], outs[1])  # the scale reached the computation
    # Eta is used by DDIM only.
    assert np.allclose(outs[0], f(x_T, 1.0, 0.0, 0.0, key)) == (sampler != "ddim")


def test_changing_num_steps_compiles_once_per_value():
    eps_fn = point_mass_eps(0.1)

    def steps_target(x, eta, num_steps):
        return sample(eps_fn, x, SCHED, "plms", num_steps, eta)

    f = jax.jit(steps_target, static_argnames="num_steps")
    x_T = jnp.ones((2, 3))
    with count_compiles("steps_target") as compiles:
        for n, eta in [(5, 0.0), (10, 0.1), (5, 0.2), (10, 0.3), (5, 0.4)]:
            f(x_T, eta, num_steps=n)
    assert f._cache_size() == 2 and len(compiles) == 2


def test_schedule_is_traced_not_baked_in():
    f = jax.jit(
        lambda sch, x: sample(point_mass_eps(0.2, sch), x, sch, "ddim", 5, set_alpha_to_one=True)
    )
    x_T = jnp.ones((2, 1))
    for kind in ("linear", "scaled_linear"):
        np.testing.assert_allclose(f(NoiseSchedule.create(kind, 100), x_T), 0.2, atol=1e-4)
    assert f._cache_size() == 1


def _masked_inputs():
    k1, k2 = jax.random.split(jax.random.key(8))
    x_T = jax.random.normal(k1, (2, 4, 4, 3))
    known = jax.random.normal(k2, x_T.shape) * 0.5
    mask = jnp.zeros((2, 4, 4, 1)).at[:, :, :2].set(1.0)  # keep the left half
    return x_T, known, mask


def _coupled_eps(x, t):
    """A model whose output everywhere depends on the spatial mean (so masks matter)."""
    ab = _ab(SCHED, t, x.ndim)
    return jnp.sqrt(1 - ab) * (x - 0.5 * jnp.mean(x, axis=(1, 2), keepdims=True))


def test_masked_ddim_matches_a_reference_loop():
    """The paper's inpainting-by-mask around diffusers' DDIM step."""
    x_T, known, mask = _masked_inputs()
    got = jit_sample(
        _coupled_eps, x_T, SCHED, "ddim", 10, 0.0, "leading", 1, mask=mask, x_known=known
    )
    sch = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    sch.alphas_cumprod = torch.from_numpy(np.array(SCHED.alphas_cumprod))
    sch.final_alpha_cumprod = sch.alphas_cumprod[0]
    sch.set_timesteps(10)
    m, x0, noise = (torch.from_numpy(np.array(a)) for a in (mask, known, x_T))
    x = noise
    for t in sch.timesteps:
        x = m * sch.add_noise(x0, noise, t[None]) + (1 - m) * x
        eps = _coupled_eps(jnp.asarray(x.numpy()), jnp.full((2,), int(t), jnp.int32))
        x = sch.step(torch.from_numpy(np.array(eps)), t, x).prev_sample
    a0 = sch.final_alpha_cumprod
    want = m * (a0**0.5 * x0 + (1 - a0) ** 0.5 * noise) + (1 - m) * x
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    free = jit_sample(_coupled_eps, x_T, SCHED, "ddim", 10, 0.0, "leading", 1)
    assert float(jnp.max(jnp.abs((got - free) * (1 - mask)))) > 1e-2  # the kept half mattered


@pytest.mark.parametrize("sampler", ALL_SAMPLERS)
def test_full_and_empty_masks(sampler):
    x_T, known, _ = _masked_inputs()
    run = lambda **kw: jit_sample(
        _coupled_eps, x_T, SCHED, sampler, 6, rng=jax.random.key(0), set_alpha_to_one=True, **kw
    )
    ones, zeros = jnp.ones(x_T.shape[:-1] + (1,)), jnp.zeros(x_T.shape[:-1] + (1,))
    np.testing.assert_allclose(run(mask=ones, x_known=known), known, atol=1e-6)
    np.testing.assert_allclose(run(mask=zeros, x_known=known), run(), atol=1e-6)


@pytest.mark.parametrize("sampler", ["ddpm", "plms"])  # DDIM and DPM-Solver++: parity tests
def test_img2img_keeps_more_of_the_input_at_low_strength(sampler):
    x_T, init, _ = _masked_inputs()
    eps_fn = gaussian_model(0.0, 0.5)
    dist = [
        float(
            jnp.mean(
                jnp.abs(
                    jit_sample(
                        eps_fn,
                        x_T,
                        SCHED,
                        sampler,
                        20,
                        rng=jax.random.key(0),
                        x_init=init,
                        strength=s,
                    )
                    - init
                )
            )
        )
        for s in (0.2, 0.6, 1.0)
    ]
    assert dist[0] < dist[1] < dist[2], dist


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sampler="euler"), "valid samplers.*ddim.*ddpm.*plms.*dpmpp_2m"),
        (dict(sampler="ddpm"), "pass rng"),
        (dict(eta=-0.1), "eta must be >= 0"),
        (dict(timestep_spacing="uniform"), "valid.*leading"),
        (dict(num_steps=2000), "num_steps must be in"),
        (dict(prediction_type="score"), "valid.*epsilon"),
        (dict(x_init=jnp.zeros((1, 3))), "x_init .* shape of x_T"),
        (dict(x_init=jnp.zeros((1, 2)), strength=0.001), "no denoising step"),
        (dict(strength=0.5), "pass x_init"),
        (dict(mask=jnp.ones((1, 2))), "pass both or neither"),
        (dict(mask=jnp.ones((3, 2)), x_known=jnp.zeros((1, 2))), "does not broadcast"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(point_mass_eps(0.0), jnp.zeros((1, 2)), SCHED, **kwargs)


@pytest.mark.parametrize("sampler", ALL_SAMPLERS)
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
