"""Timestep grids the samplers visit (diffusers' `timestep_spacing`), and img2img truncation.

Grids are built in numpy from static arguments, so they are compile-time constants of a sampler.
"""

from __future__ import annotations

import numpy as np

TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def _check(spacing: str, num_train_timesteps: int, num_steps: int, max_steps: int) -> None:
    if spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"Unknown timestep_spacing {spacing!r}; valid: {TIMESTEP_SPACINGS}.")
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise ValueError(f"num_steps must be an int, got {num_steps!r}.")
    if not 1 <= num_steps <= max_steps:
        raise ValueError(
            f"num_steps must be in [1, {max_steps}] (schedule length {num_train_timesteps}), "
            f"got {num_steps}."
        )


def _trailing(T: int, num_steps: int) -> np.ndarray:
    # round(arange(T, 0, -T/n)) - 1, without arange's float end-point hazard.
    return np.round(T - np.arange(num_steps) * (T / num_steps)).astype(np.int64) - 1


def _finish(ts: np.ndarray, T: int, steps_offset: int) -> np.ndarray:
    if ts.min() < 0 or ts.max() > T - 1:
        raise ValueError(
            f"Timesteps {ts.tolist()} leave [0, {T - 1}]; lower steps_offset={steps_offset}."
        )
    return np.ascontiguousarray(ts, dtype=np.int32)


def make_timesteps(
    num_train_timesteps: int,
    num_steps: int,
    spacing: str = "leading",
    steps_offset: int = 0,
) -> np.ndarray:
    """The descending timesteps of DDPM/DDIM/PLMS, as diffusers' DDIM/PNDM `set_timesteps`.

    Args:
        num_train_timesteps: T of the schedule.
        num_steps: number of sampler steps, 1 <= num_steps <= T.
        spacing: "leading" (arange(num_steps) * (T // num_steps) + steps_offset; the paper
            code's "uniform" DDIM grid is "leading" with steps_offset=1), "trailing"
            (round(arange(T, 0, -T / num_steps)) - 1) or "linspace"
            (round(linspace(0, T - 1, num_steps))).
        steps_offset: added to the "leading" grid only (as diffusers).

    Returns:
        int32 [num_steps], strictly descending, inside [0, T - 1].

    Raises:
        ValueError: on an unknown spacing or out-of-range counts.
    """
    T = int(num_train_timesteps)
    _check(spacing, T, num_steps, T)
    if spacing == "leading":
        ts = (np.arange(num_steps, dtype=np.int64) * (T // num_steps) + steps_offset)[::-1]
    elif spacing == "trailing":
        ts = _trailing(T, num_steps)
    else:
        ts = np.round(np.linspace(0, T - 1, num_steps)).astype(np.int64)[::-1]
    return _finish(ts, T, steps_offset)


def dpm_solver_timesteps(
    num_train_timesteps: int,
    num_steps: int,
    spacing: str = "leading",
    steps_offset: int = 0,
) -> np.ndarray:
    """The grid of diffusers' `DPMSolverMultistepScheduler` (its last step lands on sigma = 0).

    "linspace" and "leading" space num_steps + 1 points and drop the final t = 0 (the solver
    ends at ab = 1 after the last grid point instead); "trailing" is the `make_timesteps` grid.

    Returns:
        int32 [num_steps], strictly descending, inside [0, T - 1].
    """
    T = int(num_train_timesteps)
    _check(spacing, T, num_steps, T if spacing == "trailing" else T - 1)
    if spacing == "leading":
        ratio = T // (num_steps + 1)
        ts = (np.arange(num_steps + 1, dtype=np.int64) * ratio)[::-1][:-1] + steps_offset
    elif spacing == "trailing":
        ts = _trailing(T, num_steps)
    else:
        ts = np.round(np.linspace(0, T - 1, num_steps + 1)).astype(np.int64)[::-1][:-1]
    return _finish(ts, T, steps_offset)


def img2img_start_index(num_steps: int, strength: float) -> int:
    """How many leading grid steps img2img skips, as diffusers' img2img `get_timesteps`.

    The sampler runs the last min(int(num_steps * strength), num_steps) steps of the grid,
    starting from the input noised to the first of them.

    Args:
        num_steps: the full grid length.
        strength: in (0, 1]; 1 runs the whole grid.

    Raises:
        ValueError: if strength is outside (0, 1] or leaves no step to run.
    """
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}.")
    init_steps = min(int(num_steps * strength), num_steps)
    if init_steps < 1:
        raise ValueError(
            f"strength={strength} with num_steps={num_steps} leaves no denoising step; "
            "raise one of them."
        )
    return num_steps - init_steps
