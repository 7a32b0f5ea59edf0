"""Timestep grids: hand-computed cases, diffusers parity, img2img truncation."""

import numpy as np
import pytest
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler

from ldm_jax.diffusion import (
    dpm_solver_timesteps,
    img2img_start_index,
    make_timesteps,
    sampler_timesteps,
)
from ldm_jax.diffusion.plms import plms_plan


@pytest.mark.parametrize(
    "T,n,spacing,offset,expected",
    [
        (10, 4, "leading", 0, [6, 4, 2, 0]),
        (10, 4, "leading", 1, [7, 5, 3, 1]),
        (10, 3, "leading", 0, [6, 3, 0]),
        (10, 4, "trailing", 0, [9, 7, 4, 1]),
        (10, 3, "trailing", 0, [9, 6, 2]),
        (10, 4, "linspace", 0, [9, 6, 3, 0]),
        (10, 3, "linspace", 0, [9, 4, 0]),
        (10, 10, "trailing", 0, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
    ],
)
def test_make_timesteps_small_cases(T, n, spacing, offset, expected):
    ts = make_timesteps(T, n, spacing, offset)
    assert ts.dtype == np.int32
    assert ts.tolist() == expected


def test_make_timesteps_stable_diffusion_grid():
    ts = make_timesteps(1000, 50, "leading", steps_offset=1)
    assert ts[0] == 981 and ts[-1] == 1 and set(np.diff(ts).tolist()) == {-20}
    assert make_timesteps(1000, 50, "trailing")[:3].tolist() == [999, 979, 959]


@pytest.mark.parametrize(
    "args,match",
    [
        ((10, 4, "uniform"), "valid.*leading.*trailing.*linspace"),
        ((10, 0), r"num_steps must be in \[1, 10\]"),
        ((10, 11), r"num_steps must be in \[1, 10\]"),
        ((10, 10, "leading", 1), "steps_offset"),
    ],
)
def test_make_timesteps_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        make_timesteps(*args)


GRIDS = [
    (n, spacing, offset)
    for n in (1, 3, 7, 10, 25, 50, 999)
    for spacing, offset in (("leading", 0), ("leading", 1), ("trailing", 0), ("linspace", 0))
]


@pytest.mark.parametrize("n,spacing,offset", GRIDS)
def test_grids_match_diffusers(n, spacing, offset):
    kw = dict(num_train_timesteps=1000, timestep_spacing=spacing, steps_offset=offset)
    ddim = DDIMScheduler(**kw)
    ddim.set_timesteps(n)
    assert make_timesteps(1000, n, spacing, offset).tolist() == ddim.timesteps.tolist()
    # PLMS evaluates the model on PNDM's (skip_prk_steps) sequence, repeated grid point included.
    pndm = PNDMScheduler(skip_prk_steps=True, **kw)
    pndm.set_timesteps(n)
    plan = plms_plan(make_timesteps(1000, n, spacing, offset))
    assert plan.t_model.tolist() == pndm.timesteps.tolist()
    dpm = DPMSolverMultistepScheduler(**kw)
    dpm.set_timesteps(n)
    if dpm.timesteps.max() > 999:  # diffusers leaves the schedule here; we refuse
        with pytest.raises(ValueError, match="lower steps_offset"):
            dpm_solver_timesteps(1000, n, spacing, offset)
    else:
        assert dpm_solver_timesteps(1000, n, spacing, offset).tolist() == dpm.timesteps.tolist()


def test_plms_plan_steps_from_the_saved_sample_once():
    plan = plms_plan(np.array([30, 20, 10, 0]))
    assert plan.t_model.tolist() == [30, 20, 20, 10, 0]
    assert plan.t_from.tolist() == [30, 30, 20, 10, 0]
    assert plan.t_to.tolist() == [20, 20, 10, 0, -1]
    assert plan.aux.restart.tolist() == [False, True, False, False, False]
    assert plan.aux.push.tolist() == [True, False, True, True, True]
    np.testing.assert_allclose(plan.aux.coef.sum(axis=1), 1.0, rtol=1e-6)  # consistent weights
    np.testing.assert_allclose(plan.aux.coef[4], [55 / 24, -59 / 24, 37 / 24, -9 / 24])


@pytest.mark.parametrize(
    "n,strength,start", [(50, 1.0, 0), (50, 0.75, 13), (50, 0.3, 35), (10, 0.55, 5), (3, 0.4, 2)]
)
def test_img2img_start_index_as_diffusers(n, strength, start):
    # diffusers: init_timestep = min(int(n * strength), n); t_start = max(n - init_timestep, 0)
    assert img2img_start_index(n, strength) == start
    grid = sampler_timesteps("ddim", 1000, n, "leading", 1, strength)
    assert grid.tolist() == make_timesteps(1000, n, "leading", 1)[start:].tolist()


@pytest.mark.parametrize(
    "strength,match", [(0.0, r"\(0, 1\]"), (1.5, r"\(0, 1\]"), (0.01, "no denoising step")]
)
def test_img2img_start_index_rejects_bad_strength(strength, match):
    with pytest.raises(ValueError, match=match):
        img2img_start_index(50, strength)


def test_dpm_leading_grid_needs_room_for_its_extra_point():
    # ratio = 10 // (9 + 1): points 9 .. 0, the final 0 dropped (the solver ends at ab = 1).
    assert dpm_solver_timesteps(10, 9, "leading").tolist() == [9, 8, 7, 6, 5, 4, 3, 2, 1]
    with pytest.raises(ValueError, match=r"num_steps must be in \[1, 9\]"):
        dpm_solver_timesteps(10, 10, "leading")
