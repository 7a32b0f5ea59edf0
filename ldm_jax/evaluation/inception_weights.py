"""The FID Inception-v3 weights (pytorch-fid's `pt_inception-2015-12-05`) and a batched extractor.

The weights are TensorFlow's 2015-12-05 Inception graph ported to PyTorch by pytorch-fid; they
cannot be downloaded by this library (nor in its tests). Get the file once from pytorch-fid's
GitHub release (`WEIGHTS_URL`, 95 MB) and pass its path: `--inception_weights PATH` on the CLIs,
the environment variable `LDM_JAX_INCEPTION_WEIGHTS`, or `load_fid_inception(path)`. The `.pth`
is read with the restricted unpickler of `ldm_jax.interop.torch_pickle` (no code from the file
runs, no PyTorch needed), in the zip format or the pre-1.6 one (that release predates
PyTorch 1.6); a `.safetensors` file with the same tensor names works too.

  features = load_fid_inception(path)           # clean-fid's protocol by default
  out = features(images_uint8)                  # [N, H, W, 3] -> {"pool3": [N, 2048], ...}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from ldm_jax.evaluation import fid_protocol
from ldm_jax.evaluation.inception_net import FIDInceptionV3
from ldm_jax.interop import torch_pickle
from ldm_jax.interop.safetensors_file import read_safetensors
from ldm_jax.interop.tensors import FlaxPath, assemble
from ldm_jax.parallel import sharding

WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
ENV_VAR = "LDM_JAX_INCEPTION_WEIGHTS"
FEATURE_NAMES = ("pool3", "logits", "logits_unbiased", "spatial")
# Flax leaf -> PyTorch name, per variable collection.
_TORCH_LEAF = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


class InceptionWeightsNotFoundError(FileNotFoundError):
    """The FID Inception weights file was not given or does not exist."""


def resolve_weights_path(path: str | os.PathLike | None) -> str:
    """`path`, else `$LDM_JAX_INCEPTION_WEIGHTS`; it must be an existing file.

    Raises:
      InceptionWeightsNotFoundError: one line naming where to get the file and how to pass it.
    """
    chosen = os.fspath(path) if path else os.environ.get(ENV_VAR) or None
    if chosen is None or not os.path.isfile(chosen):
        where = "none was given" if chosen is None else f"{chosen} does not exist"
        raise InceptionWeightsNotFoundError(
            f"The FID Inception-v3 weights are needed ({where}): download {WEIGHTS_URL} and "
            f"pass --inception_weights PATH or set {ENV_VAR}=PATH."
        )
    return chosen


def torch_name(path: FlaxPath) -> str:
    """`("params", "Mixed_6d", "branch1x1", "bn", "scale")` -> `Mixed_6d.branch1x1.bn.weight`."""
    collection, *modules, leaf = path
    return ".".join([*modules, _TORCH_LEAF[(collection, leaf)]])


def abstract_variables(model: FIDInceptionV3 | None = None) -> dict:
    """The network's {"params", "batch_stats"} as shapes (nothing is computed)."""
    model = model or FIDInceptionV3()
    x = jnp.zeros((1, fid_protocol.INCEPTION_SIZE, fid_protocol.INCEPTION_SIZE, 3), jnp.float32)
    return flax.core.unfreeze(jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x)))


def variables_from_state_dict(tensors: Mapping[str, np.ndarray], source: str) -> dict:
    """pytorch-fid's state dict -> our {"params", "batch_stats"} (numpy, float32).

    Raises:
      interop.tensors.WeightMismatchError: listing every missing, unexpected, mis-shaped tensor.
    """
    tensors = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
    return assemble(
        abstract_variables(),
        tensors,
        torch_name,
        ignore=lambda name: name.endswith(".num_batches_tracked"),
        source=source,
    )


def load_inception_variables(path: str | os.PathLike | None = None) -> dict:
    """Reads a `.pth` (torch.save zip) or `.safetensors` file of pytorch-fid's FID Inception.

    Args:
      path: the file; None reads `$LDM_JAX_INCEPTION_WEIGHTS`.

    Returns:
      {"params": ..., "batch_stats": ...} for `FIDInceptionV3.apply`.

    Raises:
      InceptionWeightsNotFoundError: no file.
      interop.torch_pickle.CheckpointFormatError: a corrupt, truncated or unsafe file.
      interop.tensors.WeightMismatchError: the tensors do not match the network (listed).
    """
    path = resolve_weights_path(path)
    if path.endswith(".safetensors"):
        tensors = read_safetensors(path)
    else:  # A zip archive or the pre-1.6 format (pytorch-fid's file is probably the latter).
        tensors = torch_pickle.load_state_dict(path)
    return variables_from_state_dict(tensors, f"Inception weights file {path}")


class InceptionFeatures:
    """Images -> FID Inception features, one compiled program per input size.

    Call with [N, H, W, 3] (or grey) images in [0, 255], uint8 or float; returns numpy float32
    `pool3` [N, 2048], `logits` [N, 1008], `logits_unbiased` [N, 1008] (for the Inception
    Score) and `spatial` [N, 2023] (sFID). Images go through `fid_protocol`'s `mode` (host
    resize for `clean`, in-program resize for the legacy modes), in batches of `batch_size`;
    the last batch is padded, so one size compiles once. With a `mesh`, each batch is split
    over its data axes (`batch_size` must be a multiple of their size) and the weights are
    replicated; all of the mesh's devices must belong to this process.
    """

    def __init__(
        self,
        variables: Any,
        mode: str = "clean",
        batch_size: int = 50,
        mesh: Mesh | None = None,
        dtype: jnp.dtype = jnp.float32,
    ):
        self.mode = fid_protocol.check_mode(mode)
        self.batch_size = int(batch_size)
        model = FIDInceptionV3(dtype=dtype)
        if mesh is None:
            self._batch_sharding = self._replicated = None
        else:
            rules = sharding.DEFAULT_LOGICAL_AXIS_RULES
            divisor = sharding.batch_divisor(mesh, rules)
            if self.batch_size % divisor:
                raise ValueError(
                    f"batch_size {self.batch_size} is not a multiple of the mesh's "
                    f"{divisor} data-parallel devices."
                )
            self._batch_sharding = sharding.batch_sharding(mesh, rules)
            self._replicated = NamedSharding(mesh, jax.sharding.PartitionSpec())
        self.variables = jax.device_put(variables, self._replicated)

        def forward(variables: Any, x: jnp.ndarray) -> dict[str, jnp.ndarray]:
            return model.apply(variables, fid_protocol.network_input(x, mode))

        self._forward = jax.jit(forward)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        n, b = len(images), self.batch_size
        if n == 0:
            raise ValueError("No images to compute Inception features of.")
        out: dict[str, list[np.ndarray]] = {k: [] for k in FEATURE_NAMES}
        for start in range(0, n, b):  # host work per batch: memory stays one batch
            chunk = fid_protocol.host_preprocess(images[start : start + b], self.mode)
            real = len(chunk)  # [real, H', W', 3] float32
            if real < b:
                pad = np.zeros((b - real, *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, pad])
            feats = self._forward(self.variables, jax.device_put(chunk, self._batch_sharding))
            for k in FEATURE_NAMES:
                out[k].append(np.asarray(feats[k])[:real])
        return {k: np.concatenate(v) for k, v in out.items()}


def load_fid_inception(
    path: str | os.PathLike | None = None,
    mode: str = "clean",
    batch_size: int = 50,
    mesh: Mesh | None = None,
) -> InceptionFeatures:
    """The FID Inception-v3 feature extractor from pytorch-fid's weights file.

    Args:
      path: `pt_inception-2015-12-05-6726825d.pth` (or a `.safetensors` with its tensors);
        None reads `$LDM_JAX_INCEPTION_WEIGHTS`.
      mode: the resize protocol, `fid_protocol.MODES` (`clean`, `legacy_pytorch`,
        `legacy_tensorflow`).
      batch_size: images per compiled forward pass.
      mesh: optional device mesh to split each batch over (see `InceptionFeatures`).

    Raises:
      InceptionWeightsNotFoundError: no file (one line: where to get it, how to pass it).
      interop.tensors.WeightMismatchError: the file's tensors do not match the network.
    """
    fid_protocol.check_mode(mode)
    return InceptionFeatures(load_inception_variables(path), mode, batch_size, mesh)
