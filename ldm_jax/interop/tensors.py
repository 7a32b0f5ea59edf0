"""Layout conversion between PyTorch tensors and Flax parameters, and strict tree assembly.

PyTorch stores conv kernels as [out, in, kh, kw] (Conv1d: [out, in, k]) and Linear weights as
[out, in]; Flax stores conv kernels as [kh, kw, in, out] and Dense kernels as [in, out]. A 1x1 conv
and a Linear hold the same numbers, so either PyTorch layout is accepted for a Flax 1x1 conv or
Dense kernel (diffusers' autoencoder attention uses Linear where the paper's code uses 1x1 convs).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

FlaxPath = tuple[str, ...]
_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}


class WeightMismatchError(ValueError):
    """A checkpoint's tensors do not match the model: missing, unexpected or mis-shaped."""


# What a checkpoint tensor may hold for a floating-point parameter: the dtypes released weights
# come in (a float64 or integer tensor there is a file for something else, or a broken export).
FLOAT_SOURCES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


def dtype_problem(arr: Any, want: Any, allow_float64: bool = False) -> str | None:
    """Why a tensor of `arr`'s dtype cannot fill a parameter of dtype `want`, or None.

    Floating parameters take float32, float16 or bfloat16 tensors (and float64 with
    `allow_float64`, for arrays this library wrote itself); integer parameters integer tensors;
    other parameters anything.
    """
    got = np.dtype(arr.dtype) if hasattr(arr, "dtype") else np.asarray(arr).dtype
    floats = FLOAT_SOURCES + ((np.dtype(np.float64),) if allow_float64 else ())
    if jnp.issubdtype(want, jnp.floating) and got not in floats:
        return f"{got}, expected float32, float16 or bfloat16"
    if jnp.issubdtype(want, jnp.integer) and not jnp.issubdtype(got, jnp.integer):
        return f"{got}, expected an integer dtype"
    return None


def one_line_summary(message: str, per_section: int = 3) -> str:
    """A multi-line mismatch message (`assemble`'s: a first line, then sections such as
    "missing tensors:" with one indented item per line) as one line for a CLI: every section
    with its count and first `per_section` items, e.g. "The checkpoint does not match the
    model; missing tensors (2): a; b | mis-shaped tensors (1): ..." (`assemble` writes its
    first section's header on the first line). One-line messages are returned as they are."""
    lines = [line for line in message.splitlines() if line.strip()]
    if len(lines) <= 1:
        return message.strip()
    head, sections = [], []  # sections: [header, items]
    for line in lines:
        if line.startswith((" ", "\t")) and sections:
            sections[-1][1].append(line.strip())
        elif line.rstrip().endswith(":"):
            sections.append([line.strip()[:-1], []])
        elif sections:
            sections[-1][1].append(line.strip())
        else:
            head.append(line.strip())
    parts = []
    for header, items in sections:
        shown = "; ".join(items[:per_section])
        more = f" (+{len(items) - per_section} more)" if len(items) > per_section else ""
        parts.append(f"{header} ({len(items)}): {shown}{more}")
    return " ".join([*head, " | ".join(parts)]).strip()


def flax_path_to_compvis(path: FlaxPath) -> str:
    """Our parameter path -> the paper's state-dict name (without the top-level prefix).

    `("input_blocks_1_0", "in_layers_0", "norm", "scale")` -> `input_blocks.1.0.in_layers.0.weight`.
    The rules: `GroupNorm32`'s inner `norm` module is dropped, `_<digits>` becomes `.<digits>`,
    the autoencoder's `mid_block_1`/`mid_attn_1` become `mid.block_1`/`mid.attn_1`, the U-Net's
    downsampling conv is `op`, and `kernel`/`scale`/`embedding` become `weight`.
    """
    *mods, leaf = path
    if len(mods) >= 2 and mods[-1] == "norm" and leaf in ("scale", "bias"):
        mods = mods[:-1]  # GroupNorm32 wraps an nn.GroupNorm named "norm".
    out = []
    for m in mods:
        mid = re.fullmatch(r"mid_(block|attn)_(\d+)", m)
        out.append(f"mid.{mid.group(1)}_{mid.group(2)}" if mid else _dot_digits(m))
    name = ".".join(out)
    name = re.sub(r"^input_blocks\.(\d+)\.0\.conv$", r"input_blocks.\1.0.op", name)
    return f"{name}.{_LEAF_TO_TORCH.get(leaf, leaf)}"


def flax_path_to_xtransformers(path: FlaxPath) -> str:
    """A `BERTEmbedder` parameter path -> the reference x-transformers state-dict name.

    `("transformer", "attn_layers", "layers_1_1", "net_0_0", "kernel")` ->
    `transformer.attn_layers.layers.1.1.net.0.0.weight`; `("transformer", "norm", "scale")` ->
    `transformer.norm.weight` (a LayerNorm, so unlike `flax_path_to_compvis` nothing is dropped).
    """
    *mods, leaf = path
    return ".".join([*(_dot_digits(m) for m in mods), _LEAF_TO_TORCH.get(leaf, leaf)])


def _dot_digits(name: str) -> str:
    """`net_0_proj` -> `net.0.proj`, `input_blocks_1_0` -> `input_blocks.1.0`."""
    return re.sub(r"_(\d+)(_|$)", lambda m: f".{m.group(1)}" + ("." if m.group(2) else ""), name)


def torch_to_flax(
    arr: np.ndarray, target_shape: tuple[int, ...], name: str, leaf: str = "kernel"
) -> np.ndarray:
    """Converts one PyTorch tensor to the Flax layout of `target_shape`.

    Args:
      arr: the PyTorch tensor.
      target_shape: shape of the Flax parameter.
      name: the tensor's name, for error messages.
      leaf: the Flax leaf name; only `kernel`s are re-laid out.

    Raises:
      WeightMismatchError: naming `name` when the shapes cannot match.
    """
    arr = np.asarray(arr)
    target_shape = tuple(target_shape)
    out = arr
    if leaf != "kernel":
        pass
    elif len(target_shape) == 4 and arr.ndim == 4:
        out = arr.transpose(2, 3, 1, 0)  # [O, I, kh, kw] -> [kh, kw, I, O]
    elif len(target_shape) == 4 and arr.ndim == 2:
        out = arr.T[None, None]  # Linear [O, I] -> 1x1 conv [1, 1, I, O]
    elif len(target_shape) == 3 and arr.ndim == 3:
        out = arr.transpose(2, 1, 0)  # Conv1d [O, I, k] -> [k, I, O]
    elif len(target_shape) == 2 and arr.ndim == 2:
        out = arr.T  # Linear [O, I] -> Dense [I, O]
    elif len(target_shape) == 2 and arr.ndim == 4 and arr.shape[2:] == (1, 1):
        out = arr[:, :, 0, 0].T  # 1x1 conv -> Dense
    if out.shape != target_shape:
        raise WeightMismatchError(
            f"Tensor {name!r} has shape {tuple(arr.shape)}, which does not fit the model's "
            f"parameter of shape {target_shape}."
        )
    return out


def flax_to_torch(arr: np.ndarray, path: FlaxPath, as_linear: bool = False) -> np.ndarray:
    """Converts one Flax parameter to PyTorch layout.

    Args:
      arr: the Flax parameter.
      path: its path (the leaf name decides kernel vs. embedding).
      as_linear: write a 1x1 conv kernel as a Linear weight [O, I].
    """
    arr = np.asarray(arr, np.float32)
    if path[-1] != "kernel":
        return arr
    if arr.ndim == 4:
        return arr[0, 0].T if as_linear else arr.transpose(3, 2, 0, 1)
    if arr.ndim == 3:
        return arr.transpose(2, 1, 0)
    return arr.T


def abstract_params(module: Any, *args: Any, method: Callable | None = None, **kwargs: Any) -> dict:
    """The parameter tree of `module.init(..., *args)` as shapes only (nothing is computed)."""
    init = lambda: nn.unbox(module.init(jax.random.PRNGKey(0), *args, method=method, **kwargs))
    return flax.core.unfreeze(jax.eval_shape(init).get("params", {}))


def assemble(
    abstract: Mapping[str, Any],
    tensors: Mapping[str, np.ndarray],
    name_of: Callable[[FlaxPath], str],
    ignore: Callable[[str], bool] = lambda name: False,
    source: str = "checkpoint",
) -> dict:
    """Builds a full parameter tree from named PyTorch tensors, refusing any mismatch.

    Args:
      abstract: the model's parameter tree (arrays or `jax.ShapeDtypeStruct`s).
      tensors: PyTorch-layout tensors by name.
      name_of: maps a Flax parameter path to its tensor name.
      ignore: names in `tensors` that may be left unused (e.g. loss or optimizer weights).
      source: what `tensors` came from, for error messages.

    Returns:
      The nested parameter dict with numpy arrays in the model's dtypes.

    Raises:
      WeightMismatchError: listing every missing, unexpected, mis-shaped and mis-typed tensor
        (`dtype_problem`) by name, before converting any.
    """
    flat = flax.traverse_util.flatten_dict(abstract)
    out, missing, bad, used, typed = {}, [], [], set(), []
    for path, leaf in flat.items():
        name = name_of(path)
        if name not in tensors:
            missing.append(f"{name} (for {'/'.join(path)}, shape {tuple(leaf.shape)})")
            continue
        used.add(name)
        problem = dtype_problem(tensors[name], leaf.dtype)
        if problem is not None:
            typed.append(f"{name} (for {'/'.join(path)}) is {problem}")
            continue
        try:
            out[path] = torch_to_flax(tensors[name], leaf.shape, name, path[-1]).astype(leaf.dtype)
        except WeightMismatchError as e:
            bad.append(str(e))
    unexpected = sorted(k for k in tensors if k not in used and not ignore(k))
    problems = []
    if missing:
        problems.append("missing tensors:\n  " + "\n  ".join(missing))
    if unexpected:
        problems.append("unexpected tensors:\n  " + "\n  ".join(unexpected))
    if bad:
        problems.append("mis-shaped tensors:\n  " + "\n  ".join(bad))
    if typed:
        problems.append("tensors of the wrong dtype:\n  " + "\n  ".join(typed))
    if problems:
        raise WeightMismatchError(f"The {source} does not match the model; " + "\n".join(problems))
    return flax.traverse_util.unflatten_dict(out)
