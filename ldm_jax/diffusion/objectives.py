"""Forward process, parameterisation conversions and the per-example regression loss.

Every function takes `t` as int32 [B] (or a scalar) and broadcasts the schedule coefficient over
the non-batch axes of `x` [B, ...]. Results are float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ldm_jax.diffusion.schedules import NoiseSchedule

# diffusers' names for what the network predicts.
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def extract(coeffs: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
    """Gathers coeffs[t] and appends singleton axes so it broadcasts against a rank-`ndim` array.

    Args:
        coeffs: float32 [T].
        t: int [B] or [].
        ndim: rank of the array the result multiplies, e.g. 4 for [B, H, W, C].

    Returns:
        float32 [B, 1, ..., 1] (or [1, ..., 1] for scalar t).
    """
    c = coeffs[jnp.asarray(t, jnp.int32)].astype(jnp.float32)
    return c.reshape(c.shape + (1,) * (ndim - c.ndim))


def _coefficients(schedule: NoiseSchedule, t: jax.Array, ndim: int) -> tuple[jax.Array, jax.Array]:
    """(sqrt(ab_t), sqrt(1 - ab_t)), each float32 [B, 1, ..., 1]."""
    return (
        extract(schedule.sqrt_alphas_cumprod, t, ndim),
        extract(schedule.sqrt_one_minus_alphas_cumprod, t, ndim),
    )


def q_sample(schedule: NoiseSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """Draws x_t ~ q(x_t | x_0): sqrt(ab_t) x0 + sqrt(1 - ab_t) noise.

    Args:
        schedule: the noise schedule.
        x0: clean data [B, ...].
        t: int32 [B].
        noise: standard normal, same shape as x0.

    Returns:
        x_t, float32 [B, ...].
    """
    x0, noise = x0.astype(jnp.float32), noise.astype(jnp.float32)
    sqrt_ab, sqrt_1m_ab = _coefficients(schedule, t, x0.ndim)  # [B, 1, ...] each
    return sqrt_ab * x0 + sqrt_1m_ab * noise


def predict_x0_from_eps(
    schedule: NoiseSchedule, x_t: jax.Array, t: jax.Array, eps: jax.Array
) -> jax.Array:
    """Inverts q_sample for x0: (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t). Shapes [B, ...]."""
    x_t, eps = x_t.astype(jnp.float32), eps.astype(jnp.float32)
    sqrt_ab, sqrt_1m_ab = _coefficients(schedule, t, x_t.ndim)
    return (x_t - sqrt_1m_ab * eps) / sqrt_ab


def predict_eps_from_x0(
    schedule: NoiseSchedule, x_t: jax.Array, t: jax.Array, x0: jax.Array
) -> jax.Array:
    """Inverts q_sample for the noise: (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t). Shapes [B, ...]."""
    x_t, x0 = x_t.astype(jnp.float32), x0.astype(jnp.float32)
    sqrt_ab, sqrt_1m_ab = _coefficients(schedule, t, x_t.ndim)
    return (x_t - sqrt_ab * x0) / sqrt_1m_ab


def velocity(schedule: NoiseSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """The v target of Salimans & Ho (2022): sqrt(ab_t) noise - sqrt(1 - ab_t) x0. [B, ...]."""
    x0, noise = x0.astype(jnp.float32), noise.astype(jnp.float32)
    sqrt_ab, sqrt_1m_ab = _coefficients(schedule, t, x0.ndim)
    return sqrt_ab * noise - sqrt_1m_ab * x0


def training_target(
    schedule: NoiseSchedule,
    x0: jax.Array,
    t: jax.Array,
    noise: jax.Array,
    prediction_type: str = "epsilon",
) -> jax.Array:
    """What the network regresses onto for a given parameterisation (see `PREDICTION_TYPES`).

    Returns:
        float32 [B, ...]: noise ("epsilon"), x0 ("sample") or v ("v_prediction").
    """
    if prediction_type == "epsilon":
        return noise.astype(jnp.float32)
    if prediction_type == "sample":
        return x0.astype(jnp.float32)
    if prediction_type == "v_prediction":
        return velocity(schedule, x0, t, noise)
    raise ValueError(f"Unknown prediction_type {prediction_type!r}; valid: {PREDICTION_TYPES}.")


def eps_from_model_output(
    schedule: NoiseSchedule,
    x_t: jax.Array,
    t: jax.Array,
    model_output: jax.Array,
    prediction_type: str = "epsilon",
) -> jax.Array:
    """Converts a network output of any `PREDICTION_TYPES` into eps, for the samplers.

    Returns:
        float32 [B, ...] predicted noise.
    """
    out = model_output.astype(jnp.float32)
    if prediction_type == "epsilon":
        return out
    if prediction_type == "sample":
        return predict_eps_from_x0(schedule, x_t, t, out)
    if prediction_type == "v_prediction":  # eps = sqrt(ab) v + sqrt(1 - ab) x_t
        sqrt_ab, sqrt_1m_ab = _coefficients(schedule, t, out.ndim)
        return sqrt_ab * out + sqrt_1m_ab * x_t.astype(jnp.float32)
    raise ValueError(f"Unknown prediction_type {prediction_type!r}; valid: {PREDICTION_TYPES}.")


def eps_mse_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Per-example mean squared error over the non-batch axes, in float32.

    Works for any target (eps, x0, v); the caller weights and reduces over the batch.

    Args:
        pred: [B, ...] network output (any float dtype).
        target: [B, ...] same shape.

    Returns:
        float32 [B].
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} shapes differ.")
    sq = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))  # [B, ...]
    return jnp.mean(sq.reshape(sq.shape[0], -1), axis=-1)  # [B]
