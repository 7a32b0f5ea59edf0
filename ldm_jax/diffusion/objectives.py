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


def predict_x0_from_v(
    schedule: NoiseSchedule, x_t: jax.Array, t: jax.Array, v: jax.Array
) -> jax.Array:
    """x0 = sqrt(ab_t) x_t - sqrt(1 - ab_t) v. Shapes [B, ...]."""
    sqrt_ab, sqrt_1m_ab = _coefficients(schedule, t, x_t.ndim)
    return sqrt_ab * x_t.astype(jnp.float32) - sqrt_1m_ab * v.astype(jnp.float32)


def predict_eps_from_v(
    schedule: NoiseSchedule, x_t: jax.Array, t: jax.Array, v: jax.Array
) -> jax.Array:
    """eps = sqrt(ab_t) v + sqrt(1 - ab_t) x_t. Shapes [B, ...]."""
    sqrt_ab, sqrt_1m_ab = _coefficients(schedule, t, x_t.ndim)
    return sqrt_ab * v.astype(jnp.float32) + sqrt_1m_ab * x_t.astype(jnp.float32)


def split_model_output(
    model_output: jax.Array,
    x_t: jax.Array,
    alpha_bar: jax.Array,
    prediction_type: str = "epsilon",
) -> tuple[jax.Array, jax.Array]:
    """Converts a network output into the pair (x0, eps) given ab_t directly (as samplers hold it).

    Args:
        model_output: [B, ...] eps, x0 or v (see `PREDICTION_TYPES`).
        x_t: [B, ...] the network input.
        alpha_bar: ab_t, broadcastable against x_t ([] or [B, 1, ...]).
        prediction_type: what the network predicts.

    Returns:
        (x0 [B, ...], eps [B, ...]), float32. With eps-prediction at ab_t = 0 (zero terminal SNR)
        x0 is not defined (inf); v-prediction stays finite there.
    """
    out, x_t = model_output.astype(jnp.float32), x_t.astype(jnp.float32)
    alpha_bar = jnp.asarray(alpha_bar, jnp.float32)
    sqrt_ab, sqrt_1m_ab = jnp.sqrt(alpha_bar), jnp.sqrt(1.0 - alpha_bar)
    if prediction_type == "epsilon":
        return (x_t - sqrt_1m_ab * out) / sqrt_ab, out
    if prediction_type == "sample":
        return out, (x_t - sqrt_ab * out) / sqrt_1m_ab
    if prediction_type == "v_prediction":
        return sqrt_ab * x_t - sqrt_1m_ab * out, sqrt_ab * out + sqrt_1m_ab * x_t
    raise ValueError(f"Unknown prediction_type {prediction_type!r}; valid: {PREDICTION_TYPES}.")


def eps_from_model_output(
    schedule: NoiseSchedule,
    x_t: jax.Array,
    t: jax.Array,
    model_output: jax.Array,
    prediction_type: str = "epsilon",
) -> jax.Array:
    """Converts a network output of any `PREDICTION_TYPES` into eps.

    Returns:
        float32 [B, ...] predicted noise.
    """
    alpha_bar = extract(schedule.alphas_cumprod, t, x_t.ndim)  # [B, 1, ...]
    return split_model_output(model_output, x_t, alpha_bar, prediction_type)[1]


def x0_from_model_output(
    schedule: NoiseSchedule,
    x_t: jax.Array,
    t: jax.Array,
    model_output: jax.Array,
    prediction_type: str = "epsilon",
) -> jax.Array:
    """Converts a network output of any `PREDICTION_TYPES` into the x0 prediction.

    Returns:
        float32 [B, ...] predicted clean data.
    """
    alpha_bar = extract(schedule.alphas_cumprod, t, x_t.ndim)  # [B, 1, ...]
    return split_model_output(model_output, x_t, alpha_bar, prediction_type)[0]


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
