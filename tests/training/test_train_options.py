"""Training options: LR schedules (closed form), gradient accumulation, bf16 compute, remat."""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.quickstart import get_config
from ldm_jax.config.options import train_options
from ldm_jax.config.validation import ConfigError, validate_config
from ldm_jax.trainers import ldm as train_ldm
from ldm_jax.training.gradients import accumulate_gradients, split_micro_batches
from ldm_jax.training.optimizer import learning_rate_schedule


@pytest.mark.parametrize("kind", ["constant", "cosine", "linear"])
def test_learning_rate_schedules_match_closed_form(kind):
    peak, warmup, total, floor = 1e-3, 10, 110, 0.1
    schedule = learning_rate_schedule(peak, warmup, total, kind, floor)
    for step in (0, 5, 10):
        assert float(schedule(step)) == pytest.approx(peak * step / warmup)
    for step in (10, 35, 60, 110, 200):
        frac = min((step - warmup) / (total - warmup), 1.0)
        want = {
            "constant": peak,
            "cosine": peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))),
            "linear": peak * (1 - frac) + peak * floor * frac,
        }[kind]
        assert float(schedule(step)) == pytest.approx(want, rel=1e-5)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate_schedule(1e-3, 1, 10, "step", 0.0)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_accumulated_gradients_equal_the_full_batch_gradient(steps):
    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(16, 3)), "y": rng.normal(size=(16, 1))}
    batch = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), batch)
    params = {"w": jnp.asarray(rng.normal(size=(3, 1)), jnp.float32), "b": jnp.zeros((1,))}

    def loss_and_grad(p, b, key):
        del key
        f = lambda q: jnp.mean((b["x"] @ q["w"] + q["b"] - b["y"]) ** 2)
        return jax.value_and_grad(f)(p)

    full_loss, full_grads = loss_and_grad(params, batch, None)
    loss, grads = accumulate_gradients(loss_and_grad, params, batch, jax.random.PRNGKey(0), steps)
    assert float(loss) == pytest.approx(float(full_loss), rel=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(full_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_micro_batches_interleave_rows():
    batch = {"x": jnp.arange(8)}
    micro = split_micro_batches(batch, 2)["x"]
    np.testing.assert_array_equal(micro, [[0, 2, 4, 6], [1, 3, 5, 7]])
    with pytest.raises(ValueError, match="not divisible into 3"):
        split_micro_batches(batch, 3)


def _ldm_step_outputs(**train_overrides):
    config = get_config("tiny")
    config.train.update(train_overrides)
    tx = train_ldm.optimizer(config)
    state = train_ldm.init_state(config, tx)
    h, w, c = train_ldm.builders.latent_shape(config)
    rng = np.random.default_rng(0)
    batch = {
        "mean": jnp.asarray(rng.normal(size=(8, h, w, c)), jnp.float32),
        "logvar": jnp.full((8, h, w, c), -3.0, jnp.float32),
        "label": jnp.asarray(rng.integers(0, 10, 8), jnp.int32),
    }
    step = jax.jit(train_ldm.make_train_step(config, tx, 0.8))
    new_state = state
    for _ in range(3):  # The learning rate is 0 at step 0; zero-initialised outputs then
        new_state, metrics = step(new_state, batch)  # let gradients reach deeper layers.
    return state, new_state, float(metrics["loss"])


@pytest.mark.slow
def test_bf16_remat_and_accumulation_train_float32_weights_to_comparable_losses():
    _, f32_state, f32_loss = _ldm_step_outputs()
    for overrides in (
        {"compute_dtype": "bfloat16"},
        {"remat": "full"},
        {"remat": "dots", "grad_accum_steps": 2},
    ):
        before, after, loss = _ldm_step_outputs(**overrides)
        assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(after.params)), overrides
        moments = [p for p in jax.tree.leaves(after.opt_state) if p.dtype != jnp.int32]
        assert moments and all(p.dtype == jnp.float32 for p in moments)
        assert int(after.step) == 3 and np.isfinite(loss)
        moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before.params, after.params)
        assert sum(jax.tree.leaves(moved)) > 20
        if overrides == {"remat": "full"}:
            # Rematerialisation recomputes the same values: same loss, same update.
            assert loss == pytest.approx(f32_loss, rel=1e-6)
            for a, b in zip(
                jax.tree.leaves(after.params), jax.tree.leaves(f32_state.params), strict=True
            ):
                np.testing.assert_allclose(a, b, atol=1e-6)
        elif overrides == {"compute_dtype": "bfloat16"}:
            assert loss == pytest.approx(f32_loss, rel=0.05)  # bf16 has ~3 significant digits.
            assert loss != f32_loss  # ... and really computed in bf16.


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("compute_dtype", "float16", "train.compute_dtype"),
        ("remat", "everything", "train.remat"),
        ("grad_accum_steps", 3, "train.batch_size"),
        ("lr_schedule", "step", "train.lr_schedule"),
        ("latent_cache", "ram", "train.latent_cache"),
    ],
)
def test_bad_options_name_the_field(field, value, message):
    config = get_config("tiny")
    config.train[field] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_bad_mesh_names_the_field():
    config = get_config("tiny")
    config.mesh.data = -1
    config.mesh.fsdp = -1
    with pytest.raises(ConfigError, match="config.mesh"):
        validate_config(config)
    config = get_config("tiny")
    config.mesh.logical_axis_rules = (("embed", "model"),)
    with pytest.raises(ConfigError, match="unknown mesh axis 'model'"):
        validate_config(config)


def test_older_configs_get_default_options():
    config = get_config("tiny")
    for field in ("compute_dtype", "remat", "grad_accum_steps", "lr_schedule", "latent_cache"):
        del config.train[field]
    opts = train_options(config.train)
    assert (opts.compute_dtype, opts.remat, opts.grad_accum_steps) == ("float32", "none", 1)


def test_bare_model_descriptions_are_refused_by_the_trainer_with_a_pointer():
    import ml_collections

    from ldm_jax.config.files import load_config_file

    root = pathlib.Path(__file__).resolve().parents[2]
    full = load_config_file(root / "configs" / "paper" / "celebahq_ldm_vq4.py")
    config = ml_collections.ConfigDict({"model": full.model.to_dict()})
    with pytest.raises(ConfigError, match="config.stage is missing.*experiment.finalize"):
        validate_config(config)


def test_each_micro_batch_gets_its_own_folded_keys():
    batch = {"x": jnp.arange(8.0)}
    keys = (jax.random.PRNGKey(1), jax.random.PRNGKey(2))

    def loss_and_grad(params, b, rngs):
        noise = jax.random.normal(rngs[0], ()) + 10 * jax.random.normal(rngs[1], ())
        return jnp.mean(b["x"]) * params + noise, params

    loss, _ = accumulate_gradients(loss_and_grad, jnp.float32(1.0), batch, keys, 2)
    micro = split_micro_batches(batch, 2)["x"]
    want = np.mean(
        [
            float(jnp.mean(micro[i]))
            + float(jax.random.normal(jax.random.fold_in(keys[0], i), ()))
            + 10 * float(jax.random.normal(jax.random.fold_in(keys[1], i), ()))
            for i in range(2)
        ]
    )
    assert float(loss) == pytest.approx(want, rel=1e-5)
