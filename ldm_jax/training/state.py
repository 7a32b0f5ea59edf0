"""The train state shared by both trainers: creation and one optimizer update (+ EMA)."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from ldm_jax.training.finite_guard import first_nonfinite, guard


@flax.struct.dataclass
class TrainState:
    """Everything a training run needs to continue exactly where it stopped.

    Attributes:
      step: int32 scalar, number of optimizer updates applied.
      params: model parameters (float32).
      opt_state: optax state.
      ema_params: exponential moving average of `params` (the weights used for sampling), or an
        empty dict when EMA is off.
      rng: uint32 [2] PRNG key for the next step.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    rng: jax.Array


def create_state(
    params: Any, tx: optax.GradientTransformation, rng: jax.Array, use_ema: bool
) -> TrainState:
    """A fresh state at step 0 (EMA initialised to the parameters)."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        ema_params=jax.tree.map(jnp.copy, params) if use_ema else {},
        rng=rng,
    )


def apply_gradients(
    state: TrainState,
    grads: Any,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    ema_decay: float | None,
) -> TrainState:
    """One optimizer update, plus the EMA update when `ema_decay` is set."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema_decay is not None:
        # Warm-up of the decay as the reference `LitEma`: min(decay, (1 + n) / (10 + n)).
        n = state.step.astype(jnp.float32)
        decay = jnp.minimum(ema_decay, (1.0 + n) / (10.0 + n))
        ema = optax.incremental_update(params, ema, step_size=1.0 - decay)
    return state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema, rng=rng
    )


def checked_update(
    state: TrainState,
    loss: jax.Array,
    grads: Any,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    ema_decay: float | None,
    skip_nonfinite: bool,
) -> tuple[TrainState, jax.Array]:
    """`apply_gradients` plus the non-finite report of `loss` and `grads`
    (`finite_guard.first_nonfinite`); with `skip_nonfinite`, a non-finite update leaves the
    parameters, optimizer state and EMA unchanged (`finite_guard.guard`)."""
    report = first_nonfinite(loss, grads)
    new_state = apply_gradients(state, grads, tx, rng, ema_decay)
    return guard(state, new_state, report, skip_nonfinite), report
