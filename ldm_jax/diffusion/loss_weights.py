"""Per-timestep loss weights: L_simple, min-SNR-gamma, and the paper code's L_simple/L_vlb mix.

All functions take `t` as int32 [B] and return float32 [B] weights that multiply the per-example
regression loss of `objectives.eps_mse_loss` (whatever the target: eps, x0 or v).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ldm_jax.diffusion.objectives import PREDICTION_TYPES, eps_mse_loss
from ldm_jax.diffusion.schedules import NoiseSchedule

WEIGHTINGS = ("simple", "min_snr")
LOSS_TYPES = ("l2", "l1")


def snr(schedule: NoiseSchedule, t: jax.Array) -> jax.Array:
    """Signal-to-noise ratio ab_t / (1 - ab_t), float32 [B] (as diffusers' `compute_snr`)."""
    ab = schedule.alphas_cumprod[jnp.asarray(t, jnp.int32)]
    return ab / (1.0 - ab)


def min_snr_weight(
    schedule: NoiseSchedule,
    t: jax.Array,
    gamma: float | jax.Array = 5.0,
    prediction_type: str = "epsilon",
) -> jax.Array:
    """Min-SNR-gamma weights (Hang et al. 2023) for a loss on the given target.

    The x0-loss weight min(SNR, gamma) expressed for each target, as diffusers' training scripts:
    eps: min(SNR, gamma) / SNR; x0: min(SNR, gamma); v: min(SNR, gamma) / (SNR + 1). At zero SNR
    (zero-terminal-SNR schedules) the eps weight is its limit, 1.

    Args:
        schedule: the noise schedule.
        t: int32 [B].
        gamma: the clip value (5 in the paper).
        prediction_type: one of `PREDICTION_TYPES`.

    Returns:
        float32 [B].
    """
    s = snr(schedule, t)  # [B]
    clipped = jnp.minimum(s, gamma)
    if prediction_type == "epsilon":
        return jnp.where(s > 0, clipped / jnp.where(s > 0, s, 1.0), 1.0)
    if prediction_type == "sample":
        return clipped
    if prediction_type == "v_prediction":
        return clipped / (s + 1.0)
    raise ValueError(f"Unknown prediction_type {prediction_type!r}; valid: {PREDICTION_TYPES}.")


def lvlb_weights(schedule: NoiseSchedule, prediction_type: str = "epsilon") -> jax.Array:
    """The reference LatentDiffusion's `lvlb_weights` [T] (CompVis `DDPM.register_schedule`).

    eps: beta_t^2 / (2 var_t alpha_t (1 - ab_t)) with var_t the posterior variance (v_posterior=0);
    x0: 0.5 sqrt(ab_t) / (2 - ab_t) (the reference's literal `2. * 1 - ab`); v: ones. Entry 0
    (where the posterior variance is 0) is replaced by entry 1, as the reference does.

    Returns:
        float32 [T].
    """
    b, a, ab = schedule.betas, schedule.alphas, schedule.alphas_cumprod
    if prediction_type == "epsilon":
        var = schedule.posterior_variance
        w = b**2 / (2.0 * jnp.where(var > 0, var, 1.0) * a * (1.0 - ab))
    elif prediction_type == "sample":
        w = 0.5 * jnp.sqrt(ab) / (2.0 - ab)
    elif prediction_type == "v_prediction":
        w = jnp.ones_like(b)
    else:
        raise ValueError(f"Unknown prediction_type {prediction_type!r}; valid: {PREDICTION_TYPES}.")
    return w.at[0].set(w[1]) if w.shape[0] > 1 else w


def loss_weight(
    schedule: NoiseSchedule,
    t: jax.Array,
    weighting: str = "simple",
    prediction_type: str = "epsilon",
    *,
    min_snr_gamma: float | jax.Array = 5.0,
    l_simple_weight: float | jax.Array = 1.0,
    original_elbo_weight: float | jax.Array = 0.0,
) -> jax.Array:
    """Per-example weight w_t = l_simple_weight * base_t + original_elbo_weight * lvlb_weights[t].

    With weighting="simple" (base_t = 1) this is the reference LatentDiffusion's `p_losses` with
    a fixed logvar of 0: l_simple_weight * L_simple + original_elbo_weight * L_vlb, where both
    terms are the same per-example regression error and L_vlb is weighted by `lvlb_weights`.

    Args:
        schedule: the noise schedule.
        t: int32 [B].
        weighting: "simple" (base 1) or "min_snr" (base `min_snr_weight`).
        prediction_type: the regression target (matters for "min_snr" and the L_vlb term).
        min_snr_gamma: gamma of "min_snr".
        l_simple_weight: weight of the base term (the reference's `l_simple_weight`).
        original_elbo_weight: weight of the L_vlb term (the reference's `original_elbo_weight`).

    Returns:
        float32 [B].
    """
    t = jnp.asarray(t, jnp.int32)
    if weighting == "simple":
        base = jnp.ones(t.shape, jnp.float32)
    elif weighting == "min_snr":
        base = min_snr_weight(schedule, t, min_snr_gamma, prediction_type)
    else:
        raise ValueError(f"Unknown loss weighting {weighting!r}; valid: {WEIGHTINGS}.")
    w = l_simple_weight * base
    if not (isinstance(original_elbo_weight, (int, float)) and original_elbo_weight == 0):
        w = w + original_elbo_weight * lvlb_weights(schedule, prediction_type)[t]
    return w.astype(jnp.float32)


def l1_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Per-example mean absolute error over the non-batch axes, in float32 (the reference's
    `loss_type="l1"`). pred, target: [B, ...] -> float32 [B]."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} shapes differ.")
    err = jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32))  # [B, ...]
    return jnp.mean(err.reshape(err.shape[0], -1), axis=-1)  # [B]


def weighted_mse_loss(
    pred: jax.Array,
    target: jax.Array,
    schedule: NoiseSchedule,
    t: jax.Array,
    weighting: str = "simple",
    prediction_type: str = "epsilon",
    loss_type: str = "l2",
    **weight_kwargs,
) -> jax.Array:
    """The per-example regression error times `loss_weight(schedule, t, ...)`.

    Args:
        pred: [B, ...] network output.
        target: [B, ...] `objectives.training_target` of the same prediction_type.
        schedule, t, weighting, prediction_type, weight_kwargs: see `loss_weight`.
        loss_type: "l2" (mean squared error, `eps_mse_loss`) or "l1" (mean absolute error), as
            the reference's `loss_type`.

    Returns:
        float32 [B]; the caller reduces over the batch.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"Unknown loss_type {loss_type!r}; valid: {LOSS_TYPES}.")
    weights = loss_weight(schedule, t, weighting, prediction_type, **weight_kwargs)  # [B]
    error = eps_mse_loss(pred, target) if loss_type == "l2" else l1_loss(pred, target)
    return weights * error
