"""Which accelerator a notebook runs on, and a config fitted to it.

The notebooks call `detect()` once, then `fit_to_accelerator(config, accelerator)`: all devices
go on the mesh's data axis, every batch size becomes a multiple of the device count, and TPUs
compute in bfloat16 (float32 weights, norms, softmax and losses). `small_mode()` is the switch CI
uses to run every notebook top to bottom on a CPU in a minute or two.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib

import jax
import ml_collections

from ldm_jax.config.files import load_config_file

# Set to 1 (CI does) to run the notebooks with small configs and few steps.
SMALL_MODE_VARIABLE = "LDM_JAX_NOTEBOOK_SMALL"
# Training sections of a config that carry a batch size and a compute dtype.
TRAIN_SECTIONS = ("autoencoder_train", "train", "finetune")


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """The devices this notebook's JAX sees.

    Attributes:
      backend: "tpu", "gpu" or "cpu".
      device_kind: e.g. "TPU v5 lite", "NVIDIA A100-SXM4-40GB", "cpu".
      devices: all devices over all processes.
      local_devices: the devices of this process.
      processes: JAX processes (1 in a notebook).
    """

    backend: str
    device_kind: str
    devices: int
    local_devices: int
    processes: int

    def __str__(self) -> str:
        return (
            f"{self.backend.upper()}: {self.devices} x {self.device_kind} "
            f"({self.processes} process{'es' if self.processes > 1 else ''})"
        )


def detect() -> Accelerator:
    """The accelerator JAX initialised (TPU, else GPU, else CPU)."""
    devices = jax.devices()
    return Accelerator(
        backend=jax.default_backend(),
        device_kind=devices[0].device_kind,
        devices=len(devices),
        local_devices=jax.local_device_count(),
        processes=jax.process_count(),
    )


def small_mode() -> bool:
    """Whether `LDM_JAX_NOTEBOOK_SMALL` asks for the small, CI-sized run."""
    return os.environ.get(SMALL_MODE_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def repo_path(*parts: str) -> pathlib.Path:
    """A path inside the repository this package was installed from (`pip install -e .`).

    Raises:
      FileNotFoundError: if the package was installed without its repository (a wheel), which
        lacks `configs/` and `experiments/`.
    """
    root = pathlib.Path(__file__).resolve().parents[2]  # ldm_jax/colab/ -> the checkout
    path = root.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: the notebooks need the repository checkout (git clone, then "
            "pip install -e .), not a wheel install."
        )
    return path


def load_config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`configs/<name>.py`'s `get_config(arg)`, unlocked (e.g. `load_config("quickstart")`)."""
    config = load_config_file(repo_path("configs", f"{name}.py"), arg)
    return ml_collections.ConfigDict(config.to_dict())


def small_config(
    name: str,
    keep_from_full: tuple[str, ...] = (),
    autoencoder_steps: int = 40,
    ldm_steps: int = 60,
    log_every: int = 4,
) -> ml_collections.ConfigDict:
    """Small mode's config: the `:tiny` networks of `configs/<name>.py` on the full config's data.

    The tiny variants train on synthetic shapes; the notebooks' small mode trains them on the
    real data instead, for a few steps, so every cell sees real images and captions.

    Args:
      name: the config under `configs/`, without ".py" (e.g. "tasks/emoji/text2img_bert").
      keep_from_full: dotted keys that the tiny variant changes but the real data needs (e.g.
        "model.cond_stage.vocab_size" for the captions' words, "model.unet.in_channels" for a
        concat condition of grey images); keys the full config lacks are skipped.
      autoencoder_steps: stage-1 steps (a checkpoint at the end).
      ldm_steps: stage-2 steps (a checkpoint at the end).
      log_every: steps between logged losses (points of the live plot).
    """
    config = load_config(name, "tiny")
    full = load_config(name)
    config.data = full.data
    for key in keep_from_full:
        *parents, leaf = key.split(".")
        source, target = full, config
        for part in parents:
            source, target = source.get(part), target.get(part)
            if source is None or target is None:
                break
        if source is not None and target is not None and leaf in source:
            target[leaf] = source[leaf]
    config.autoencoder_train.update(
        steps=autoencoder_steps, log_every=log_every, checkpoint_every=autoencoder_steps
    )
    config.train.update(steps=ldm_steps, log_every=log_every, checkpoint_every=ldm_steps)
    return config


def fit_to_accelerator(
    config: ml_collections.ConfigDict, accelerator: Accelerator
) -> ml_collections.ConfigDict:
    """A copy of `config` for `accelerator` (see the module docstring).

    Batch sizes round up to a multiple of the device count (and of `grad_accum_steps` times it),
    so each device gets an equal share of every micro-batch.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    if "mesh" in config:
        config.mesh.update(data=-1, fsdp=1, tensor=1)
    for name in TRAIN_SECTIONS:
        section = config.get(name)
        if section is None or "batch_size" not in section:
            continue
        unit = accelerator.devices * int(section.get("grad_accum_steps", 1))
        section.batch_size = int(math.ceil(section.batch_size / unit) * unit)
        if accelerator.backend == "tpu" and "compute_dtype" in section:
            section.compute_dtype = "bfloat16"
    return config
