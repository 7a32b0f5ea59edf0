"""Noise schedules: the betas of the forward process and every buffer derived from them.

All buffers are computed in float64 numpy and stored as float32 `jnp` arrays. A schedule is an
immutable pytree, so it can be passed straight through `jax.jit`; its length `T` is a static shape.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

SCHEDULE_KINDS = ("linear", "scaled_linear", "cosine")
COSINE_S = 0.008
COSINE_MAX_BETA = 0.999


def _betas(kind: str, num_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    """Float64 betas [T] for one of `SCHEDULE_KINDS`."""
    if kind == "linear":  # diffusers "linear"
        return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
    if kind == "scaled_linear":  # CompVis "linear"; Stable Diffusion with 0.00085 / 0.012
        return np.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=np.float64) ** 2
    if kind == "cosine":  # Nichol & Dhariwal (2021); diffusers "squaredcos_cap_v2"

        def alpha_bar(u: float) -> float:
            return math.cos((u + COSINE_S) / (1 + COSINE_S) * math.pi / 2) ** 2

        betas = [
            min(
                1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps),
                COSINE_MAX_BETA,
            )
            for i in range(num_timesteps)
        ]
        return np.asarray(betas, dtype=np.float64)
    raise ValueError(f"Unknown noise schedule kind {kind!r}; valid kinds: {SCHEDULE_KINDS}.")


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Rescales betas [T] so the last timestep has zero SNR (Lin et al. 2023, Algorithm 1).

    sqrt(ab) is shifted so its last entry is 0 and scaled so its first entry is unchanged, as
    diffusers' `rescale_zero_terminal_snr`. The last beta becomes 1 (ab_{T-1} = 0), so the model
    must not predict eps there: use v-prediction with "trailing" timesteps, as the paper recommends.

    Args:
        betas: float64 [T], T >= 2.

    Returns:
        float64 [T] rescaled betas.
    """
    sqrt_ab = np.sqrt(np.cumprod(1.0 - np.asarray(betas, np.float64)))  # [T]
    first, last = sqrt_ab[0], sqrt_ab[-1]
    sqrt_ab = (sqrt_ab - last) * (first / (first - last))
    ab = sqrt_ab**2
    alphas = np.append(ab[:1], ab[1:] / ab[:-1])
    return 1.0 - alphas


@struct.dataclass
class NoiseSchedule:
    """Discrete DDPM forward process q(x_t | x_0) = N(sqrt(ab_t) x_0, (1 - ab_t) I), t = 0..T-1.

    Attributes (all float32 [T]):
        betas: beta_t.
        alphas: 1 - beta_t.
        alphas_cumprod: ab_t = prod_{s<=t} alpha_s.
        alphas_cumprod_prev: ab_{t-1}, with ab_{-1} = 1.
        sqrt_alphas_cumprod: sqrt(ab_t).
        sqrt_one_minus_alphas_cumprod: sqrt(1 - ab_t).
        posterior_variance: variance of q(x_{t-1} | x_t, x_0) (0 at t = 0).
        posterior_log_variance_clipped: its log, with entry 0 replaced by entry 1 (Ho et al.).
        posterior_mean_coef1: coefficient of x_0 in the posterior mean.
        posterior_mean_coef2: coefficient of x_t in the posterior mean.
    """

    betas: jax.Array
    alphas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    posterior_variance: jax.Array
    posterior_log_variance_clipped: jax.Array
    posterior_mean_coef1: jax.Array
    posterior_mean_coef2: jax.Array

    @property
    def num_timesteps(self) -> int:
        """Number of training timesteps T (static: it is an array shape)."""
        return self.betas.shape[0]

    @classmethod
    def from_betas(cls, betas: np.ndarray) -> NoiseSchedule:
        """Builds every buffer from betas [T] (computed in float64, stored as float32).

        Raises:
            ValueError: if betas is not 1-D and non-empty, or not inside (0, 1].
        """
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.shape[0] < 1:
            raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}.")
        if not np.all((betas > 0) & (betas <= 1)):
            raise ValueError("betas must all lie in (0, 1].")
        alphas = 1.0 - betas
        ac = np.cumprod(alphas)
        ac_prev = np.append(1.0, ac[:-1])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        # Entry 0 is 0 (x_0 is known exactly); the log is clipped to entry 1 as in Ho et al.
        log_src = np.append(post_var[1], post_var[1:]) if len(betas) > 1 else betas
        f32 = lambda a: jnp.asarray(a, dtype=jnp.float32)
        return cls(
            betas=f32(betas),
            alphas=f32(alphas),
            alphas_cumprod=f32(ac),
            alphas_cumprod_prev=f32(ac_prev),
            sqrt_alphas_cumprod=f32(np.sqrt(ac)),
            sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1.0 - ac)),
            posterior_variance=f32(post_var),
            posterior_log_variance_clipped=f32(np.log(log_src)),
            posterior_mean_coef1=f32(betas * np.sqrt(ac_prev) / (1.0 - ac)),
            posterior_mean_coef2=f32((1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac)),
        )

    @classmethod
    def create(
        cls,
        kind: str,
        num_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 2e-2,
        *,
        rescale_zero_snr: bool = False,
    ) -> NoiseSchedule:
        """Builds a named schedule.

        Args:
            kind: "linear" (betas = linspace(beta_start, beta_end, T)), "scaled_linear"
                (betas = linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2, the paper code's
                "linear"; Stable Diffusion uses 0.00085 / 0.012) or "cosine" (Nichol & Dhariwal,
                s = 0.008, betas clipped at 0.999; beta_start/beta_end are unused).
            num_timesteps: T > 0.
            beta_start: first beta, 0 < beta_start < beta_end.
            beta_end: last beta, beta_end < 1.
            rescale_zero_snr: rescale the betas to zero terminal SNR (`rescale_zero_terminal_snr`;
                diffusers' `rescale_betas_zero_snr`).

        Raises:
            ValueError: on an unknown kind or invalid numbers.
        """
        if kind not in SCHEDULE_KINDS:
            raise ValueError(
                f"Unknown noise schedule kind {kind!r}; valid kinds: {SCHEDULE_KINDS}."
            )
        if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)):
            raise ValueError(f"num_timesteps must be an int, got {num_timesteps!r}.")
        if num_timesteps <= 0:
            raise ValueError(f"num_timesteps must be > 0, got {num_timesteps}.")
        if not 0.0 < beta_start < beta_end < 1.0:
            raise ValueError(
                f"Need 0 < beta_start < beta_end < 1, got beta_start={beta_start}, "
                f"beta_end={beta_end}."
            )
        betas = _betas(kind, int(num_timesteps), beta_start, beta_end)
        if rescale_zero_snr:
            if num_timesteps < 2:
                raise ValueError("rescale_zero_snr needs num_timesteps >= 2.")
            betas = rescale_zero_terminal_snr(betas)
        return cls.from_betas(betas)
