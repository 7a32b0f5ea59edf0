"""Reads a workdir back (trained here or written by `python -m ldm_jax.convert`).

A workdir is `config.json` plus orbax checkpoints `checkpoints/autoencoder` and `checkpoints/ldm`
(no `checkpoints/autoencoder` for the identity first stage, which has no parameters).
The networks are described either by the quickstart sections or by `config.model` (the paper
schema; see `model_config`). Each checkpoint's `state` item is a mapping holding `params` and,
for stage 2, `ema_params` (the trainers' `TrainState`, or the lean `{step, params}` /
`{step, ema_params}` of an imported model); only those are read, and their tree is checked
against the networks the config builds, so a config and weights that disagree fail by name. A
text model's WordPiece vocabulary lives next to `config.json` (`config.model.cond_stage.vocab`).
A LoRA fine-tune (`config.finetune.method == "lora"`, `trainers/finetune.py`) keeps its frozen
base denoiser in `checkpoints/base` and the LoRA tree (params and EMA) in `checkpoints/ldm`;
`load_trained_ldm` returns the base with the EMA LoRA merged in.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax
import jax
import ml_collections
import orbax.checkpoint as ocp

from ldm_jax.config import builders
from ldm_jax.config.json_config import config_from_json
from ldm_jax.config.options import is_lora_finetune, lora_config, unet_lora
from ldm_jax.interop.tensors import dtype_problem
from ldm_jax.models import factory
from ldm_jax.models.lora import merge_lora
from ldm_jax.training.checkpoint import MissingCheckpointError, abandoned_io_callbacks_silenced
from ldm_jax.workdir import layout


class WorkdirError(ValueError):
    """A workdir's config and weights disagree, or it lacks a file the model needs."""


@dataclasses.dataclass(frozen=True)
class TrainedLDM:
    """What sampling needs from a workdir.

    Attributes:
      config: the run's config (from config.json).
      ae_params: first-stage parameters.
      ldm_params: EMA parameters of the denoiser (U-Net + condition encoder).
      scale_factor: latent scale (z fed to the diffusion is scale_factor * E(x)).
      step: the LDM training step of the checkpoint.
      workdir: the folder it was read from (for files such as a text model's vocabulary).
    """

    config: ml_collections.ConfigDict
    ae_params: Any
    ldm_params: Any
    scale_factor: float
    step: int
    workdir: str = ""


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (or imported as).

    Raises:
      MissingCheckpointError: the workdir has no config.json.
      ConfigError: its config.json is not a config (invalid or truncated JSON, not an object,
        a section that is not an object; `config.json_config.config_from_json`).
    """
    path = layout.config_path(workdir)
    if not os.path.exists(path):
        raise MissingCheckpointError(
            f"{path} not found: {workdir!r} is not a training workdir. Train one with: "
            f"python -m ldm_jax.train --config configs/quickstart.py --workdir {workdir}, or "
            f"import weights with: python -m ldm_jax.convert ... --out {workdir}"
        )
    with open(path, encoding="utf-8", errors="replace") as f:
        return config_from_json(f.read(), path)


def restore_state(directory: str, step: int | None = None) -> tuple[dict, dict, int]:
    """(state as nested dicts, meta, step) of the latest (or the given) checkpoint in `directory`.

    Restored without a target, so it reads any state layout that holds `params`/`ema_params`.

    Raises:
      MissingCheckpointError: naming the folder when it holds no checkpoint, or the kept steps
        when `step` is not one of them.
    """
    directory = os.path.abspath(directory)
    latest, kept = None, []
    if os.path.isdir(directory):
        manager = ocp.CheckpointManager(directory, item_names=("state", "meta"))
        latest, kept = manager.latest_step(), sorted(manager.all_steps())
    if latest is not None and step is not None and step not in kept:
        manager.close()
        raise MissingCheckpointError(
            f"No checkpoint of step {step} in {directory}; kept steps: {kept}. Keep more with "
            "--config.train.keep_checkpoints and --config.train.checkpoint_every."
        )
    if latest is None:
        raise MissingCheckpointError(
            f"No checkpoint in {directory}. Train first: python -m ldm_jax.train --config "
            "configs/quickstart.py --workdir <WORKDIR>, or import weights with "
            "python -m ldm_jax.convert"
        )
    # Arrays go to this process's first device: the shardings saved with them name the devices
    # of the process that wrote them, which another process (or host) does not have.
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    step = latest if step is None else step
    with abandoned_io_callbacks_silenced():
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(fallback_sharding=local),
                meta=ocp.args.JsonRestore(),
            ),
        )
    manager.close()
    return dict(restored.state), dict(restored.meta or {}), int(step)


def check_params(params: Any, abstract: Any, what: str, directory: str) -> Any:
    """`params` if its paths, shapes and kinds of dtype are those of `abstract` (floating
    parameters stored as floats, not integers or booleans: `interop.tensors.dtype_problem`),
    else a `WorkdirError` listing every mismatch."""
    got = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
    want = flax.traverse_util.flatten_dict(flax.core.unfreeze(abstract), sep="/")
    problems = [f"missing {k} {tuple(v.shape)}" for k, v in want.items() if k not in got]
    problems += [f"unexpected {k}" for k in got if k not in want]
    problems += [
        f"{k}: checkpoint {tuple(got[k].shape)}, config {tuple(v.shape)}"
        for k, v in want.items()
        if k in got and tuple(got[k].shape) != tuple(v.shape)
    ]
    problems += [
        f"{k}: checkpoint dtype {problem}"
        for k, v in want.items()
        if k in got and (problem := dtype_problem(got[k], v.dtype, allow_float64=True)) is not None
    ]
    if problems:
        raise WorkdirError(
            f"The {what} weights in {directory} do not match the networks config.json describes: "
            + "; ".join(problems[:10])
            + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else "")
        )
    return params


def has_first_stage_params(config: ml_collections.ConfigDict) -> bool:
    """Whether the config's first stage has parameters (a stage-1 checkpoint to read); the
    identity first stage has none."""
    return builders.first_stage_kind(config) not in factory.PARAMETER_FREE_FIRST_STAGES


def load_first_stage_params(workdir: str, config: ml_collections.ConfigDict | None = None) -> Any:
    """The latest first-stage parameters of a workdir (trained, or written by `convert`); {}
    without reading a checkpoint for a first stage with no parameters (the identity).

    Args:
      workdir: the workdir holding `checkpoints/autoencoder`.
      config: the networks the weights must fit; default the workdir's own config.json.

    Raises:
      MissingCheckpointError: naming the folder when it holds no checkpoint.
      WorkdirError: when the weights do not fit the config's first stage.
    """
    config = load_config(workdir) if config is None else config
    if not has_first_stage_params(config):
        return {}
    ae_dir = layout.checkpoint_dir(workdir, "autoencoder")
    state, _, _ = restore_state(ae_dir)
    return check_params(
        state["params"], builders.abstract_autoencoder_params(config), "first-stage", ae_dir
    )


def load_trained_ldm(workdir: str, step: int | None = None) -> TrainedLDM:
    """Restores the latest autoencoder and LDM (EMA) weights of a workdir.

    Args:
      workdir: the workdir.
      step: an earlier kept LDM checkpoint to load instead of the latest (e.g. to score
        quality against training steps); the autoencoder is always its latest.

    Raises:
      MissingCheckpointError: naming the missing folder and the command that creates it.
      WorkdirError: when the weights do not fit the networks of config.json.
    """
    config = load_config(workdir)
    ae_params = load_first_stage_params(workdir, config)
    ldm_dir = layout.checkpoint_dir(workdir, "ldm")
    state, meta, _ = restore_state(ldm_dir, step)
    params = state.get("ema_params") or state["params"]
    abstract = builders.abstract_denoiser_params(config)
    if is_lora_finetune(config):
        base_dir = layout.checkpoint_dir(workdir, "base")
        base, _, _ = restore_state(base_dir)
        base = check_params(base["params"], abstract, "base", base_dir)
        try:
            params = merge_lora(base, unet_lora(config, params), lora_config(config))
        except ValueError as e:
            raise WorkdirError(f"{ldm_dir}: the LoRA weights do not fit the base: {e}") from None
    ldm_params = check_params(params, abstract, "denoiser", ldm_dir)
    if "scale_factor" not in meta:
        raise WorkdirError(f"{ldm_dir}: the checkpoint's metadata has no scale_factor.")
    return TrainedLDM(
        config=config,
        ae_params=ae_params,
        ldm_params=ldm_params,
        scale_factor=float(meta["scale_factor"]),
        step=int(state["step"]),
        workdir=os.path.abspath(workdir),
    )
