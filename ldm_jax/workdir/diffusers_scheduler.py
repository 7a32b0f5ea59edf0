"""diffusers scheduler configs <-> a workdir's `config.diffusion` and `config.sample`.

One table each way, used by import (`writer.write_diffusers_workdir`, `sd_writer`) and export
(`sd_export`): beta schedules (diffusers' names -> ours), and the scheduler class of each
ldm_jax sampler with the settings that make diffusers step as our sampler does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ldm_jax import diffusion
from ldm_jax.interop.diffusers_config import UnsupportedConfigError

DIFFUSERS_VERSION = "0.42.1"  # the release whose folder layout export writes (and tests read)
BETA_SCHEDULES = {
    "linear": "linear",
    "scaled_linear": "scaled_linear",
    "squaredcos_cap_v2": "cosine",
}
OUR_BETA_SCHEDULES = {ours: name for name, ours in BETA_SCHEDULES.items()}
# ldm_jax sampler -> (diffusers scheduler class, its settings beside the schedule).
SCHEDULERS = {
    "ddim": ("DDIMScheduler", dict(clip_sample=False, set_alpha_to_one=False)),
    "plms": ("PNDMScheduler", dict(skip_prk_steps=True, set_alpha_to_one=False)),
    "ddpm": ("DDPMScheduler", dict(clip_sample=False, variance_type="fixed_small")),
    "dpmpp_2m": (
        "DPMSolverMultistepScheduler",
        dict(algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True),
    ),
}
SAMPLERS = {name: sampler for sampler, (name, _) in SCHEDULERS.items()}  # class -> sampler
SPACINGS = ("leading", "trailing", "linspace")


def schedule_fields(
    kind: str, num_timesteps: int, beta_start: float, beta_end: float, betas: np.ndarray | None
) -> dict[str, Any]:
    """`config.diffusion` schedule fields; refuses when stored `betas` differ from them."""
    fields = dict(
        schedule=kind, num_timesteps=num_timesteps, beta_start=beta_start, beta_end=beta_end
    )
    if betas is not None:
        rebuilt = diffusion.NoiseSchedule.create(
            kind, num_timesteps=num_timesteps, beta_start=beta_start, beta_end=beta_end
        ).betas
        if len(rebuilt) != len(betas) or not np.allclose(rebuilt, betas, rtol=1e-4, atol=1e-7):
            raise UnsupportedConfigError(
                "The checkpoint's betas differ from its config's schedule."
            )
    return fields


def scheduler_fields(scheduler_config: dict[str, Any] | None) -> dict[str, Any]:
    """`config.diffusion` schedule fields and prediction type of a diffusers scheduler config.

    Without a config: the paper's LDM schedule (scaled_linear, 0.0015 to 0.0195, 1000 steps,
    epsilon prediction), as diffusers' CompVis LDM pipelines.

    Raises:
      UnsupportedConfigError: a schedule ldm_jax does not implement (trained betas, zero-SNR
        rescaling, another beta schedule or prediction type).
    """
    s = dict(scheduler_config or {})
    beta_schedule = s.get("beta_schedule", "scaled_linear")
    if beta_schedule not in BETA_SCHEDULES:
        raise UnsupportedConfigError(f"scheduler beta_schedule={beta_schedule!r} is not supported.")
    if s.get("trained_betas") is not None:
        raise UnsupportedConfigError("scheduler trained_betas are not supported.")
    if s.get("rescale_betas_zero_snr"):
        raise UnsupportedConfigError("scheduler rescale_betas_zero_snr=True is not supported.")
    fields = schedule_fields(
        BETA_SCHEDULES[beta_schedule],
        int(s.get("num_train_timesteps", 1000)),
        float(s.get("beta_start", 0.0015 if scheduler_config is None else 0.0001)),
        float(s.get("beta_end", 0.0195 if scheduler_config is None else 0.02)),
        None,
    )
    fields["prediction_type"] = s.get("prediction_type", "epsilon")
    if fields["prediction_type"] not in diffusion.PREDICTION_TYPES:
        raise UnsupportedConfigError(f"prediction_type={fields['prediction_type']!r}.")
    return fields


def sample_settings(scheduler_config: dict[str, Any]) -> dict[str, Any]:
    """`config.sample` entries of a diffusers scheduler: its sampler (DDIM for unknown
    classes), timestep spacing and offset."""
    spacing = scheduler_config.get("timestep_spacing", "leading")
    if spacing not in SPACINGS:
        raise UnsupportedConfigError(f"scheduler timestep_spacing={spacing!r} is not supported.")
    return dict(
        sampler=SAMPLERS.get(scheduler_config.get("_class_name"), "ddim"),
        timestep_spacing=spacing,
        steps_offset=int(scheduler_config.get("steps_offset", 0)),
    )


def scheduler_config(config: Any) -> dict[str, Any]:
    """The diffusers scheduler config of a workdir config (`config.diffusion`, `config.sample`)."""
    d, s = config.diffusion, config.sample
    name, extra = SCHEDULERS.get(s.get("sampler", "ddim"), SCHEDULERS["ddim"])
    return {
        "_class_name": name,
        "_diffusers_version": DIFFUSERS_VERSION,
        "beta_schedule": OUR_BETA_SCHEDULES[d.schedule],
        "beta_start": float(d.beta_start),
        "beta_end": float(d.beta_end),
        "num_train_timesteps": int(d.num_timesteps),
        "prediction_type": d.prediction_type,
        "steps_offset": int(s.get("steps_offset", 1)),
        "timestep_spacing": s.get("timestep_spacing", "leading"),
        **extra,
    }
