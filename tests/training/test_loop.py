"""The shared step loop: a NaN loss stops training and keeps the last good checkpoint."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ldm_jax.training.checkpoint import Checkpointer, MissingCheckpointError
from ldm_jax.training.logging import MetricWriter
from ldm_jax.training.loop import TrainingDivergedError, run_loop
from ldm_jax.training.state import apply_gradients, create_state


def _state():
    tx = optax.sgd(0.1)
    return create_state({"w": jnp.ones((3,))}, tx, jax.random.PRNGKey(0), use_ema=True), tx


def test_nan_loss_raises_and_keeps_last_good_checkpoint(tmp_path):
    state, tx = _state()

    @jax.jit
    def step_fn(state, batch):
        loss = jnp.where(state.step >= 3, jnp.nan, jnp.sum(state.params["w"] ** 2))
        grads = {"w": 2 * state.params["w"]}
        return apply_gradients(state, grads, tx, state.rng, 0.9), {"loss": loss}

    ckpt = Checkpointer(str(tmp_path / "ckpt"), max_to_keep=3)
    with pytest.raises(TrainingDivergedError, match=r"NaN or infinite.*step 2.*learning_rate"):
        run_loop(
            name="toy",
            state=state,
            step_fn=step_fn,
            batches=iter(lambda: {}, None),
            total_steps=10,
            log_every=1,
            checkpoint_every=2,
            checkpointer=ckpt,
            writer=MetricWriter(str(tmp_path)),
            meta_fn=lambda: {"pos": 1},
        )
    assert ckpt.latest_step() == 2
    restored, meta = ckpt.restore(jax.eval_shape(lambda: _state()[0]))
    assert int(restored.step) == 2 and meta == {"pos": 1}
    np.testing.assert_allclose(restored.params["w"], 0.8**2 * np.ones(3), rtol=1e-6)


def test_ema_warmup_follows_reference_formula():
    state, tx = _state()
    grads = {"w": jnp.ones((3,))}
    new = apply_gradients(state, grads, tx, state.rng, ema_decay=0.999)
    # Step 0: decay = min(0.999, 1/10) = 0.1 -> ema = 0.1 * old + 0.9 * new params.
    np.testing.assert_allclose(new.ema_params["w"], 0.1 * 1.0 + 0.9 * 0.9, rtol=1e-6)
    assert int(new.step) == 1


def test_restore_without_checkpoint_names_the_folder(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "empty"))
    with pytest.raises(MissingCheckpointError, match="No checkpoint in .*empty.*ldm_jax.train"):
        ckpt.restore(jax.eval_shape(lambda: _state()[0]))


def test_sigterm_saves_the_current_step_then_stops(tmp_path):
    import os
    import signal

    from ldm_jax.training.loop import PreemptedError

    state, tx = _state()

    def step_fn(state, batch):
        if int(state.step) == 2:  # Preempted while computing step 3.
            os.kill(os.getpid(), signal.SIGTERM)
        grads = {"w": 2 * state.params["w"]}
        return apply_gradients(state, grads, tx, state.rng, 0.9), {"loss": jnp.float32(1.0)}

    ckpt = Checkpointer(str(tmp_path / "ckpt"), max_to_keep=3)
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(PreemptedError, match="SIGTERM received; saved a checkpoint at step 3"):
        run_loop(
            name="toy",
            state=state,
            step_fn=step_fn,
            batches=iter(lambda: {}, None),
            total_steps=100,
            log_every=10,
            checkpoint_every=50,
            checkpointer=ckpt,
            writer=MetricWriter(str(tmp_path)),
            meta_fn=lambda: {"pos": 3},
        )
    assert ckpt.latest_step() == 3
    restored, meta = ckpt.restore(jax.eval_shape(lambda: _state()[0]))
    assert int(restored.step) == 3 and meta == {"pos": 3}
    assert signal.getsignal(signal.SIGTERM) is previous  # handler restored afterwards
