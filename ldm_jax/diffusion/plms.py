"""PLMS: the paper code's pseudo linear multistep sampler (Liu et al. 2022, PNDM without its
Runge-Kutta warm-up), step for step as diffusers' `PNDMScheduler(skip_prk_steps=True)`.

On a grid g_0 > ... > g_{N-1} (N >= 2) it evaluates the model N + 1 times:
  k = 0: e_0 at (x, g_0); Euler (DDIM) step g_0 -> g_1 with e_0.
  k = 1: e_1 at (x, g_1); redo g_0 -> g_1 from the saved x_{g_0} with (e_0 + e_1) / 2.
  k >= 2: e_k at (x, g_{k-1}); step g_{k-1} -> g_k (or the end) with the Adams-Bashforth
          combination of e_k and the stored history (orders 2, 3, then 4).
The history holds e_0, e_2, e_3, ... (e_1 only enters the k = 1 average), as the reference does.
A v- or x0-predicting model's output is turned into eps at its own timestep before the combination
(as the paper code's PLMS); diffusers' PNDM instead combines raw v outputs and converts once.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.diffusion.sampler_api import (
    Plan,
    Predictor,
    SamplerOptions,
    SamplerSpec,
    StepInput,
)

# Weights of (e_new, h_1, h_2, h_3) (h_1 the most recent stored eps) per multistep order.
_AB = {
    1: (1.0, 0.0, 0.0, 0.0),
    2: (1.5, -0.5, 0.0, 0.0),
    3: (23 / 12, -16 / 12, 5 / 12, 0.0),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}
_HEUN = (0.5, 0.5, 0.0, 0.0)


class PLMSAux(NamedTuple):
    """Static per-iteration table rows."""

    coef: np.ndarray  # float32 [K, 4] weights of (e_new, h_1, h_2, h_3)
    push: np.ndarray  # bool [K] store e_new in the history
    restart: np.ndarray  # bool [K] update from the sample saved at k = 0 (the k = 1 correction)


class PLMSState(NamedTuple):
    """Carry: the last three stored eps and the sample the k = 1 correction restarts from."""

    history: jax.Array  # [3, B, ...] float32, most recent first
    start: jax.Array  # [B, ...] float32


def pndm_transfer(
    x: jax.Array, eps: jax.Array, alpha_t: jax.Array, alpha_prev: jax.Array
) -> jax.Array:
    """PNDM's transfer x_t -> x_prev (Liu et al. 2022, eq. 9; diffusers `_get_prev_sample`).

    Algebraically the DDIM (eta = 0) step, written as the reference writes it.
    """
    denom = alpha_t * jnp.sqrt(1.0 - alpha_prev) + jnp.sqrt(alpha_t * (1.0 - alpha_t) * alpha_prev)
    return jnp.sqrt(alpha_prev / alpha_t) * x - (alpha_prev - alpha_t) * eps / denom


def plms_plan(grid: np.ndarray) -> Plan:
    """Per-iteration timesteps and weights for a descending grid [N] (K = N + 1 if N >= 2)."""
    g = np.asarray(grid, np.int64)
    n = len(g)
    if n == 1:
        one = np.ones(1, bool)
        aux = PLMSAux(np.asarray([_AB[1]], np.float32), one, ~one)
        return Plan(g.astype(np.int32), g.astype(np.int32), np.full(1, -1, np.int32), aux)
    nxt = np.append(g[1:], -1)  # [N]
    # k = 0, k = 1, then k = 2 .. N stepping from g[k - 1] to nxt[k - 1].
    t_model = np.concatenate([[g[0], g[1]], g[1:]])
    t_from = np.concatenate([[g[0], g[0]], g[1:]])
    t_to = np.concatenate([[g[1], g[1]], nxt[1:]])
    coef = [_AB[1], _HEUN] + [_AB[min(j + 2, 4)] for j in range(n - 1)]
    push = np.asarray([True, False] + [True] * (n - 1))
    restart = np.asarray([False, True] + [False] * (n - 1))
    aux = PLMSAux(np.asarray(coef, np.float32), push, restart)
    i32 = lambda a: np.asarray(a, np.int32)
    return Plan(i32(t_model), i32(t_from), i32(t_to), aux)


def _eps_for_update(pred, x, alpha, clip_sample):
    if clip_sample is None:
        return pred.eps
    # Re-derive eps from the clipped x0 so that clip_sample has an effect on an eps-only method.
    return (x - jnp.sqrt(alpha) * pred.x0) / jnp.sqrt(1.0 - alpha)


def _plms(predict: Predictor, x, state: PLMSState, inp: StepInput, opts: SamplerOptions):
    pred = predict(x, inp)
    e = _eps_for_update(pred, x, inp.alpha, opts.clip_sample)  # [B, ...]
    c = inp.aux.coef  # [4]
    h = state.history  # [3, B, ...]
    e_comb = c[0] * e + c[1] * h[0] + c[2] * h[1] + c[3] * h[2]
    src = jnp.where(inp.aux.restart, state.start, x)
    x_next = pndm_transfer(src, e_comb, inp.alpha_from, inp.alpha_to)
    pushed = jnp.concatenate([e[None], h[:2]], axis=0)
    state = PLMSState(
        history=jnp.where(inp.aux.push, pushed, h),
        start=jnp.where(inp.index == 0, x, state.start),
    )
    return x_next, state


def _init(x: jax.Array) -> PLMSState:
    return PLMSState(history=jnp.zeros((3,) + x.shape, jnp.float32), start=x)


PLMS = SamplerSpec(step=_plms, plan=plms_plan, init_extra=_init)
