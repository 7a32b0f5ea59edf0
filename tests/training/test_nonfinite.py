"""Non-finite losses and gradients stop the run (naming the step and the tensor) or skip the step;
loss spikes are logged.

The toy model is a quadratic loss sum(w**2) trained with SGD. A batch flag switches on a term whose
value is 0 but whose gradient is NaN (d/dw sqrt(w - w) at 0), so the gradient of one named tensor
is non-finite while the loss stays finite; a flag for the loss makes the loss itself NaN.
"""

from __future__ import annotations

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ldm_jax.training.checkpoint import Checkpointer
from ldm_jax.training.finite_guard import NONFINITE_METRIC, first_nonfinite, tensor_names
from ldm_jax.training.logging import MetricWriter
from ldm_jax.training.loop import TrainingDivergedError, run_loop
from ldm_jax.training.loss_spikes import LossSpikeDetector
from ldm_jax.training.state import checked_update, create_state

LR = 0.1
PARAMS = {"dense": {"bias": jnp.full((2,), 0.5), "kernel": jnp.ones((3,))}}


def test_first_nonfinite_names_the_first_bad_tensor():
    grads = {"a": jnp.ones(2), "b": {"c": jnp.ones(3), "d": jnp.ones(())}}
    names = tensor_names(grads)
    assert names == ("loss", "grad of a", "grad of b/c", "grad of b/d")
    assert int(first_nonfinite(jnp.float32(1.0), grads)) == -1
    assert int(first_nonfinite(jnp.float32(np.nan), grads)) == 0
    bad = {"a": jnp.ones(2), "b": {"c": jnp.array([1.0, np.inf, 0.0]), "d": jnp.float32(np.nan)}}
    assert names[int(first_nonfinite(jnp.float32(1.0), bad))] == "grad of b/c"
    assert names[int(first_nonfinite(jnp.float32(-np.inf), bad))] == "loss"


def _make_step(skip: bool):
    tx = optax.sgd(LR)

    def loss_fn(params, batch):
        loss = sum(jnp.sum(p**2) for p in jax.tree.leaves(params))
        w = params["dense"]["kernel"]
        # Value 0, gradient NaN: the kernel's gradient is non-finite, the loss is not.
        loss += jax.lax.cond(batch["bad_grad"], lambda: jnp.sqrt(w[0] - w[0]), lambda: 0.0)
        return jnp.where(batch["bad_loss"], jnp.nan, loss)

    @jax.jit
    def step_fn(state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
        state, report = checked_update(state, loss, grads, tx, state.rng, 0.9, skip)
        return state, {"loss": loss, NONFINITE_METRIC: report}

    return tx, step_fn


def _batches(bad_grad_steps=(), bad_loss_steps=()):
    step = 0
    while True:
        step += 1  # the batch of step `step` (1-based, as the loop reports steps)
        yield {
            "bad_grad": np.bool_(step in bad_grad_steps),
            "bad_loss": np.bool_(step in bad_loss_steps),
        }


def _run(tmp_path, skip, total=6, **bad):
    tx, step_fn = _make_step(skip)
    state = create_state(PARAMS, tx, jax.random.PRNGKey(0), use_ema=True)
    ckpt = Checkpointer(str(tmp_path / "ckpt"), max_to_keep=5)
    final = run_loop(
        name="toy",
        state=state,
        step_fn=step_fn,
        batches=_batches(**bad),
        total_steps=total,
        log_every=1,
        checkpoint_every=2,
        checkpointer=ckpt,
        writer=MetricWriter(str(tmp_path)),
        meta_fn=lambda: {},
        learning_rate_field="train.learning_rate",
        nonfinite_names=tensor_names(PARAMS),
        skip_nonfinite=skip,
    )
    return final, ckpt


def test_nonfinite_gradient_stops_naming_the_step_and_the_tensor(tmp_path):
    with pytest.raises(TrainingDivergedError) as error:
        _run(tmp_path, skip=False, bad_grad_steps=(3,))
    message = str(error.value)
    assert "step 3 produced a non-finite grad of dense/kernel" in message
    assert "last good one (step 2)" in message
    assert "config.train.grad_clip" in message and "config.train.on_nonfinite='skip'" in message
    assert Checkpointer(str(tmp_path / "ckpt")).all_steps() == [2]


def test_nonfinite_loss_is_named_as_the_loss(tmp_path):
    with pytest.raises(TrainingDivergedError, match="step 5 produced a non-finite loss"):
        _run(tmp_path, skip=False, bad_loss_steps=(5,))


def test_skip_leaves_the_parameters_of_a_bad_step_unchanged_and_logs_it(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        final, _ = _run(tmp_path, skip=True, bad_grad_steps=(3,), bad_loss_steps=(5,))
    # SGD on sum(w**2) scales the parameters by (1 - 2 LR) per applied update: 4 of 6 applied.
    expected = jax.tree.map(lambda p: p * (1 - 2 * LR) ** 4, PARAMS)
    for got, want in zip(jax.tree.leaves(final.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert int(final.step) == 6  # the step counter (and so the data order) still advances
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(final.opt_state))
    warnings = [r.getMessage() for r in caplog.records if "skipped step" in r.getMessage()]
    assert warnings == [
        "toy: skipped step 3: non-finite grad of dense/kernel; parameters left unchanged",
        "toy: skipped step 5: non-finite loss; parameters left unchanged",
    ]
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    skipped = [row["toy/skipped_steps"] for row in rows if "toy/skipped_steps" in row]
    assert skipped[-1] == 2
    # The logged losses are those of the applied steps only (no NaN in the curve).
    assert all(np.isfinite(row["toy/loss"]) for row in rows if "toy/loss" in row)


def test_step_without_a_report_still_stops_on_a_nan_loss(tmp_path):
    tx = optax.sgd(LR)
    state = create_state(PARAMS, tx, jax.random.PRNGKey(0), use_ema=False)

    def step_fn(state, batch):  # an older step function: only {"loss": ...}
        return state.replace(step=state.step + 1), {"loss": jnp.float32(np.nan)}

    with pytest.raises(TrainingDivergedError, match="step 1 produced a non-finite loss"):
        run_loop(
            name="toy",
            state=state,
            step_fn=step_fn,
            batches=iter(lambda: {}, None),
            total_steps=3,
            log_every=1,
            checkpoint_every=3,
            checkpointer=Checkpointer(str(tmp_path / "ckpt")),
            writer=MetricWriter(str(tmp_path)),
            meta_fn=lambda: {},
        )


def test_loss_spike_detector_flags_jumps_not_noise():
    detector = LossSpikeDetector(factor=5.0, window=50, min_history=10)
    rng = np.random.default_rng(0)
    messages = {}
    for step in range(1, 101):
        loss = 1.0 + 0.3 * rng.standard_normal() ** 2  # noisy, but within 5x of the median
        if step == 40:
            loss = 12.0
        if step == 41:
            loss = np.nan  # non-finite losses are the guard's business, not a spike
        message = detector.observe(step, float(loss))
        if message:
            messages[step] = message
    assert list(messages) == [40]
    assert messages[40].startswith("loss spike at step 40: 12 is ")
    assert detector.count == 1


def test_loss_spike_detector_needs_history_and_adapts_to_a_new_level():
    detector = LossSpikeDetector(factor=3.0, window=10, min_history=5)
    assert detector.observe(1, 1.0) is None
    assert detector.observe(2, 100.0) is None  # too little history to judge
    flagged = [s for s in range(3, 40) if detector.observe(s, 1.0 if s < 10 else 50.0)]
    # The jump to a new level is reported until the new level fills half the window.
    assert flagged[0] == 10 and len(flagged) < 10
    with pytest.raises(ValueError, match="factor > 1"):
        LossSpikeDetector(factor=1.0)


def test_loop_logs_a_loss_spike_with_its_step(tmp_path, caplog):
    tx = optax.sgd(0.0)
    state = create_state(PARAMS, tx, jax.random.PRNGKey(0), use_ema=False)
    losses = [1.0] * 30 + [50.0] + [1.0] * 5

    def step_fn(state, batch):
        loss = jnp.float32(losses[int(state.step)])
        return state.replace(step=state.step + 1), {"loss": loss}

    with caplog.at_level(logging.WARNING):
        run_loop(
            name="toy",
            state=state,
            step_fn=step_fn,
            batches=iter(lambda: {}, None),
            total_steps=len(losses),
            log_every=4,
            checkpoint_every=100,
            checkpointer=Checkpointer(str(tmp_path / "ckpt")),
            writer=MetricWriter(str(tmp_path)),
            meta_fn=lambda: {},
        )
    spikes = [r.getMessage() for r in caplog.records if "loss spike" in r.getMessage()]
    assert len(spikes) == 1 and spikes[0].startswith("toy: loss spike at step 31: 50 is 50.0x")
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [row["toy/loss_spikes"] for row in rows if "toy/loss_spikes" in row][0] == 1
