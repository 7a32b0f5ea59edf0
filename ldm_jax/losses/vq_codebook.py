"""The VQ codebook outside the gradient: EMA updates, dead-code restarts, usage and perplexity.

Pure functions over a small `CodebookEmaState`, for a quantiser built with `ema=True`
(`ldm_jax.models.quantizer.VectorQuantizer`), whose loss is the commitment term
beta * mean((z - sg[z_q])^2) alone, so the codebook parameter gets an exactly zero gradient.

The EMA update (van den Oord et al. 2017, appendix; VQ-VAE-2; Sonnet's `VectorQuantizerEMA`), with
K codes, decay d, the batch's vectors z_i and their codes k_i:

  c_k = #{i : k_i = k}                       (this batch's count per code)
  s_k = sum_{i : k_i = k} z_i                (this batch's sum per code)
  N_k <- d N_k + (1 - d) c_k                 (state.cluster_size)
  m_k <- d m_k + (1 - d) s_k                 (state.embed_sum)
  n = sum_k N_k,   Ñ_k = (N_k + eps) / (n + K eps) * n     (Laplace smoothing, keeps sum_k Ñ_k = n)
  e_k = m_k / Ñ_k                            (the new codebook)

The state stores N_k unsmoothed. It starts self-consistent, N_k = 1 and m_k = e_k, so no bias
correction is needed and an unused code keeps its vector while its size decays. (Implementations
that start from N_k = 0 and m_k = e_k, as taming's `EMAVectorQuantizer`, divide an unused code by
about eps after the first step and so throw it far away.)

How the trainer uses it, per step (all inside the one compiled step):
  1. `h, indices` from `VQModel.forward_with_codes`; the gradient of the codebook param is zero.
  2. The optimizer updates the params (the codebook leaf may be masked out of the optimizer; any
     change it makes, e.g. weight decay, is overwritten in 4).
  3. `codebook, ema = ema_update(old_codebook, ema, h.reshape(-1, e), indices.reshape(-1), d)`,
     then optionally `codebook, ema = restart_dead_codes(codebook, ema, h_flat, rng, threshold)`.
  4. `params["quantize"]["embedding"]["embedding"] = codebook`; `ema` lives in the train state
     (and the checkpoint) beside the optimizer state.
With gradient accumulation, `code_statistics` of the micro-batches add up to the batch's; pass the
sums to `ema_update_from_statistics`.

Data parallelism: the sums must run over the global batch. Under `jax.jit` with batch-sharded
`z_flat` and `indices`, `jnp.sum` and the scatter-add below are already global (XLA inserts the
cross-device reductions), so every device gets the same new codebook; no `psum` is needed. Inside
`shard_map` (per-device code) the caller would have to `psum` the statistics itself.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ldm_jax.models.quantizer import code_counts


class CodebookEmaState(NamedTuple):
    """Moving averages behind an EMA codebook (float32).

    Attributes:
      cluster_size: [n_embed] N_k, the EMA of the number of vectors assigned to each code.
      embed_sum: [n_embed, embed_dim] m_k, the EMA of the sum of the vectors assigned to each code.
    """

    cluster_size: jax.Array
    embed_sum: jax.Array


def init_ema_state(codebook: jax.Array, cluster_size: float = 1.0) -> CodebookEmaState:
    """A state consistent with `codebook` ([n_embed, embed_dim]): N_k = cluster_size, m_k = N_k e_k.

    `cluster_size` is the weight, in vectors, of the initial codebook against the first batches.
    """
    codes = codebook.astype(jnp.float32)  # [n, e]
    size = jnp.full((codes.shape[0],), cluster_size, jnp.float32)  # [n]
    return CodebookEmaState(cluster_size=size, embed_sum=codes * cluster_size)


def code_statistics(
    z_flat: jax.Array, indices: jax.Array, n_embed: int
) -> tuple[jax.Array, jax.Array]:
    """Per-code count and vector sum of one batch.

    Args:
      z_flat: [N, embed_dim] the vectors the quantiser saw (pre-quantisation latents).
      indices: [N] int their codes.
      n_embed: number of codes.

    Returns:
      counts [n_embed] float32 (c_k) and sums [n_embed, embed_dim] float32 (s_k).
    """
    z32 = z_flat.astype(jnp.float32)
    sums = jnp.zeros((n_embed, z32.shape[-1]), jnp.float32).at[indices].add(z32)
    return code_counts(indices, n_embed), sums


def ema_update_from_statistics(
    codebook: jax.Array,
    state: CodebookEmaState,
    counts: jax.Array,
    sums: jax.Array,
    decay: float | jax.Array,
    eps: float = 1e-5,
) -> tuple[jax.Array, CodebookEmaState]:
    """The EMA step (module docstring) from a batch's `code_statistics`.

    Args:
      codebook: [n_embed, embed_dim] the current codebook (only its dtype is used).
      state: the moving averages.
      counts: [n_embed] c_k; sums: [n_embed, embed_dim] s_k.
      decay: d in [0, 1) (0.99 is usual).
      eps: the Laplace smoothing constant.

    Returns:
      (new codebook [n_embed, embed_dim] in `codebook.dtype`, new state).
    """
    cluster_size = decay * state.cluster_size + (1.0 - decay) * counts  # [n]
    embed_sum = decay * state.embed_sum + (1.0 - decay) * sums  # [n, e]
    total = jnp.sum(cluster_size)
    smoothed = (cluster_size + eps) / (total + cluster_size.shape[0] * eps) * total  # [n]
    new_codebook = embed_sum / smoothed[:, None]  # [n, e]
    return new_codebook.astype(codebook.dtype), CodebookEmaState(cluster_size, embed_sum)


def ema_update(
    codebook: jax.Array,
    state: CodebookEmaState,
    z_flat: jax.Array,
    indices: jax.Array,
    decay: float | jax.Array,
    eps: float = 1e-5,
) -> tuple[jax.Array, CodebookEmaState]:
    """One EMA codebook update from a batch (formula in the module docstring); jit-safe.

    Args:
      codebook: [n_embed, embed_dim] the codebook that produced `indices` (only its dtype is used).
      state: the moving averages.
      z_flat: [N, embed_dim] pre-quantisation vectors of the (global) batch.
      indices: [N] int their nearest codes.
      decay: d in [0, 1).
      eps: the Laplace smoothing constant.

    Returns:
      (new codebook [n_embed, embed_dim], new state).
    """
    counts, sums = code_statistics(z_flat, indices, codebook.shape[0])
    return ema_update_from_statistics(codebook, state, counts, sums, decay, eps)


def restart_dead_codes(
    codebook: jax.Array,
    state: CodebookEmaState,
    z_flat: jax.Array,
    rng: jax.Array,
    threshold: float,
    reset_cluster_size: float | None = None,
) -> tuple[jax.Array, CodebookEmaState]:
    """Replace every code with N_k < threshold by a random vector of the batch; jit-safe.

    Each code draws its own batch vector (without replacement when N >= n_embed); only the dead
    ones take it (`jnp.where`, fixed shapes). A restarted code gets N_k = reset_cluster_size
    (default: threshold) and m_k = N_k z, so it must win vectors soon or it is restarted again.
    Calling it once on the initial state with a threshold above the initial cluster size
    initialises the whole codebook from data.

    Args:
      codebook: [n_embed, embed_dim].
      state: the moving averages (after this step's `ema_update`).
      z_flat: [N, embed_dim] pre-quantisation vectors of the batch.
      rng: PRNG key (the same on every process).
      threshold: EMA cluster size below which a code is dead.
      reset_cluster_size: N_k given to a restarted code.

    Returns:
      (codebook, state) with the dead codes replaced.
    """
    n_embed, n_vectors = codebook.shape[0], z_flat.shape[0]
    reset = threshold if reset_cluster_size is None else reset_cluster_size
    pick = jax.random.choice(rng, n_vectors, (n_embed,), replace=n_vectors < n_embed)  # [n]
    fresh = z_flat[pick].astype(jnp.float32)  # [n, e]
    dead = state.cluster_size < threshold  # [n]
    new_codebook = jnp.where(dead[:, None], fresh.astype(codebook.dtype), codebook)
    cluster_size = jnp.where(dead, jnp.float32(reset), state.cluster_size)
    embed_sum = jnp.where(dead[:, None], fresh * reset, state.embed_sum)
    return new_codebook, CodebookEmaState(cluster_size, embed_sum)


def usage_from_counts(counts: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(fraction of codes used, perplexity) from per-code counts [n_embed].

    perplexity = exp(H(p)) with p_k = c_k / sum c and 0 log 0 = 0: n_embed for uniform use,
    1 when a single code takes everything.
    """
    counts = counts.astype(jnp.float32)
    p = counts / jnp.maximum(jnp.sum(counts), 1.0)  # [n]
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return jnp.mean((counts > 0).astype(jnp.float32)), jnp.exp(entropy)


def codebook_usage(indices: jax.Array, n_embed: int) -> tuple[jax.Array, jax.Array]:
    """indices [...] int -> (fraction of the n_embed codes used [], perplexity []), float32."""
    return usage_from_counts(code_counts(indices, n_embed))
