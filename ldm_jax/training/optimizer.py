"""The optimizer of a training stage: AdamW with clipping and its learning-rate schedule.

One place for every stage's optimizer: `optimizer_for(section)` reads a stage's config section
(`config.autoencoder_train` or `config.train`); `make_optimizer` is the same AdamW for callers
that pass the numbers directly.
"""

from __future__ import annotations

import ml_collections
import optax

from ldm_jax.config.options import LR_SCHEDULES, train_options


def make_optimizer(
    learning_rate: float,
    warmup_steps: int,
    weight_decay: float,
    grad_clip: float,
    schedule: optax.Schedule | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
) -> optax.GradientTransformation:
    """AdamW with global-norm clipping; the learning rate follows `schedule`, by default a
    linear warm-up over `warmup_steps` to a constant `learning_rate`; `betas`: Adam's (b1, b2)."""
    if schedule is None:
        schedule = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
    parts.append(optax.adamw(schedule, b1=betas[0], b2=betas[1], weight_decay=weight_decay))
    return optax.chain(*parts)


def learning_rate_schedule(
    peak: float, warmup_steps: int, total_steps: int, kind: str, min_lr_ratio: float
) -> optax.Schedule:
    """Linear warm-up from 0 to `peak`, then constant, cosine or linear decay to the floor.

    The decay spans the steps after warm-up up to `total_steps`.
    """
    warmup = optax.linear_schedule(0.0, peak, max(warmup_steps, 1))
    if kind == "constant":
        return warmup
    decay_steps = max(total_steps - warmup_steps, 1)
    end = peak * min_lr_ratio
    if kind == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=min_lr_ratio)
    elif kind == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    else:
        raise ValueError(f"Unknown lr_schedule {kind!r}; use one of {LR_SCHEDULES}.")
    return optax.join_schedules([warmup, decay], [max(warmup_steps, 1)])


def optimizer_for(
    section: ml_collections.ConfigDict,
    betas: tuple[float, float] = (0.9, 0.999),
    learning_rate: float | None = None,
) -> optax.GradientTransformation:
    """AdamW for a stage's section: its schedule, global-norm clipping and weight decay.

    Args:
      section: `config.autoencoder_train` or `config.train`.
      betas: Adam's (b1, b2).
      learning_rate: the peak rate (default: the section's `learning_rate`).
    """
    opts = train_options(section)
    peak = section.learning_rate if learning_rate is None else learning_rate
    schedule = learning_rate_schedule(
        peak,
        section.warmup_steps,
        section.steps,
        opts.lr_schedule,
        opts.min_lr_ratio,
    )
    return make_optimizer(
        peak,
        section.warmup_steps,
        section.weight_decay,
        section.grad_clip,
        schedule=schedule,
        betas=betas,
    )
