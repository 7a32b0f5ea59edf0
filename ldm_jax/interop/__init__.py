"""Weight import/export: diffusers folders, the paper's `.ckpt` files, and PyTorch pickles."""

from ldm_jax.interop.compvis import CompVisLDM, load_compvis
from ldm_jax.interop.diffusers import (
    export_diffusers,
    load_diffusers_autoencoder,
    load_diffusers_unet,
)
from ldm_jax.interop.tensors import WeightMismatchError
from ldm_jax.interop.torch_pickle import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    load_state_dict,
    load_torch_file,
)

__all__ = [
    "CheckpointFormatError",
    "CompVisLDM",
    "load_compvis",
    "UnsafeCheckpointError",
    "WeightMismatchError",
    "export_diffusers",
    "load_diffusers_autoencoder",
    "load_diffusers_unet",
    "load_state_dict",
    "load_torch_file",
]
