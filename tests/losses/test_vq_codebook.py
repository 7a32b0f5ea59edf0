"""EMA codebook, dead-code restarts and usage against numpy references and closed forms."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ldm_jax.losses import vq_codebook as vqc

N_EMBED, DIM = 6, 3


def _nearest(z, codes):
    return ((z[:, None, :] - codes[None]) ** 2).sum(-1).argmin(1)


def _numpy_ema_step(codes, size, embed_sum, z, idx, decay, eps):
    """The VQ-VAE EMA update with Laplace smoothing, written out in float64 numpy."""
    counts = np.bincount(idx, minlength=len(codes)).astype(np.float64)
    sums = np.zeros_like(embed_sum)
    np.add.at(sums, idx, z)
    size = decay * size + (1 - decay) * counts
    embed_sum = decay * embed_sum + (1 - decay) * sums
    total = size.sum()
    smoothed = (size + eps) / (total + len(codes) * eps) * total
    return embed_sum / smoothed[:, None], size, embed_sum


def test_ema_update_matches_numpy_over_three_steps():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(N_EMBED, DIM))
    size, embed_sum = np.ones(N_EMBED), codes.copy()  # init_ema_state: N_k = 1, m_k = e_k
    state = vqc.init_ema_state(jnp.asarray(codes, jnp.float32))
    codebook = jnp.asarray(codes, jnp.float32)
    update = jax.jit(functools.partial(vqc.ema_update, decay=0.8, eps=1e-3))
    for _ in range(3):
        z = rng.normal(size=(20, DIM)) + 0.5
        idx = _nearest(z, codes)
        codes, size, embed_sum = _numpy_ema_step(codes, size, embed_sum, z, idx, 0.8, 1e-3)
        codebook, state = update(codebook, state, jnp.asarray(z, jnp.float32), jnp.asarray(idx))
        np.testing.assert_allclose(codebook, codes, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.cluster_size, size, rtol=1e-5)
        np.testing.assert_allclose(state.embed_sum, embed_sum, rtol=1e-5, atol=1e-6)
    assert codebook.dtype == jnp.float32 and state.cluster_size.shape == (N_EMBED,)
    # A code every vector picks moves to the batch mean as decay -> 0 (eps -> 0).
    z = jnp.asarray(rng.normal(size=(10, DIM)), jnp.float32)
    new, _ = vqc.ema_update(codebook, state, z, jnp.zeros(10, jnp.int32), decay=0.0, eps=0.0)
    np.testing.assert_allclose(new[0], z.mean(0), rtol=1e-5)


def test_statistics_add_over_micro_batches_and_sharded_sums_are_global():
    z = jax.random.normal(jax.random.PRNGKey(0), (32, DIM))
    idx = jax.random.randint(jax.random.PRNGKey(1), (32,), 0, N_EMBED)
    counts, sums = vqc.code_statistics(z, idx, N_EMBED)
    halves = [vqc.code_statistics(z[s], idx[s], N_EMBED) for s in (slice(0, 16), slice(16, 32))]
    np.testing.assert_allclose(halves[0][0] + halves[1][0], counts)
    np.testing.assert_allclose(halves[0][1] + halves[1][1], sums, rtol=1e-6, atol=1e-6)

    codebook = jax.random.normal(jax.random.PRNGKey(2), (N_EMBED, DIM))
    state = vqc.init_ema_state(codebook)
    update = functools.partial(vqc.ema_update, decay=0.9)
    expected = jax.jit(update)(codebook, state, z, idx)
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    by_batch = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    z_s, idx_s = jax.device_put(z, by_batch), jax.device_put(idx, by_batch)
    step = jax.jit(update, out_shardings=(replicated, replicated))
    got = step(codebook, state, z_s, idx_s)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    jax.tree.map(close, got, expected)


def test_dead_code_is_restarted_from_the_batch_and_live_codes_are_kept():
    codebook = jnp.array([[0.0, 0, 0], [1, 1, 1], [-1, -1, -1], [50, 50, 50]], jnp.float32)
    state = vqc.init_ema_state(codebook)
    z = jax.random.normal(jax.random.PRNGKey(0), (16, DIM))  # code 3 is far: never chosen
    update = jax.jit(functools.partial(vqc.ema_update, decay=0.5))
    for _ in range(3):
        idx = jnp.asarray(_nearest(np.asarray(z), np.asarray(codebook)))
        assert not np.any(np.asarray(idx) == 3)
        codebook, state = update(codebook, state, z, idx)
    np.testing.assert_allclose(state.cluster_size[3], 0.125)  # 0.5 ** 3
    restart = jax.jit(functools.partial(vqc.restart_dead_codes, threshold=0.2))
    new, new_state = restart(codebook, state, z, jax.random.PRNGKey(5))
    live = np.asarray(state.cluster_size) >= 0.2
    assert live[:3].all() and not live[3]
    np.testing.assert_array_equal(new[:3], codebook[:3])
    np.testing.assert_array_equal(new_state.cluster_size[:3], state.cluster_size[:3])
    np.testing.assert_array_equal(new_state.embed_sum[:3], state.embed_sum[:3])
    rows = np.flatnonzero((np.asarray(z) == np.asarray(new[3])).all(1))
    assert rows.size == 1  # code 3 is now one of the batch's vectors
    np.testing.assert_allclose(new_state.cluster_size[3], 0.2)
    np.testing.assert_allclose(new_state.embed_sum[3], 0.2 * np.asarray(new[3]), rtol=1e-6)


def test_restart_above_initial_size_initialises_every_code_from_data():
    codebook = jnp.zeros((N_EMBED, DIM))
    z = jax.random.normal(jax.random.PRNGKey(0), (10, DIM))
    new, state = jax.jit(functools.partial(vqc.restart_dead_codes, threshold=2.0))(
        codebook, vqc.init_ema_state(codebook), z, jax.random.PRNGKey(1)
    )
    match = (np.asarray(new)[:, None, :] == np.asarray(z)[None]).all(-1)  # [n, N]
    assert (match.sum(1) == 1).all()  # every code is a batch vector ...
    assert len(set(match.argmax(1))) == N_EMBED  # ... a different one (N >= n: no replacement)
    np.testing.assert_allclose(state.cluster_size, np.full(N_EMBED, 2.0))


def test_usage_and_perplexity_closed_forms():
    usage = jax.jit(vqc.codebook_usage, static_argnums=1)
    frac, ppl = usage(jnp.tile(jnp.arange(8), 5), 8)  # uniform over all codes
    np.testing.assert_allclose((frac, ppl), (1.0, 8.0), rtol=1e-6)
    frac, ppl = usage(jnp.full((4, 4), 3), 8)  # one code takes everything
    np.testing.assert_allclose((frac, ppl), (1 / 8, 1.0), rtol=1e-6)
    frac, ppl = usage(jnp.array([0, 0, 0, 5]), 8)  # p = (3/4, 1/4)
    entropy = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    np.testing.assert_allclose((frac, ppl), (2 / 8, np.exp(entropy)), rtol=1e-6)
    frac, ppl = jax.jit(vqc.usage_from_counts)(jnp.zeros(8))  # empty batch: no NaN
    np.testing.assert_allclose((frac, ppl), (0.0, 1.0))
