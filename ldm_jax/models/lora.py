"""Low-rank adaptation (LoRA) as pure functions over parameter trees.

A LoRA tree mirrors the base tree down to each adapted Dense module and holds two matrices there:

    base   {"middle_block_1": {"transformer_blocks_0": {"attn1": {"to_q": {"kernel": [in, out]}}}}}
    lora   {"middle_block_1": {"transformer_blocks_0": {"attn1": {"to_q": {"down": [in, r],
                                                                         "up":   [r, out]}}}}}

and the adapted model uses `kernel + scale * down @ up` with `scale = alpha / rank` (peft's
`lora_A` is `down.T` [r, in], `lora_B` is `up.T` [out, r]). Fine-tuning differentiates only the
LoRA tree:

    config = LoraConfig(rank=4)
    lora = init_lora_params(jax.random.PRNGKey(0), params, config)
    loss = lambda lora: loss_fn(merge_lora(params, lora, config))   # grads w.r.t. lora only

No module is needed: the U-Net (or text encoder) is applied to the merged tree.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

UNET_ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out_0")
CLIP_ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")

ModulePath = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Which Dense kernels get a low-rank update, and its size and scale.

    Attributes:
      rank: r, the inner dimension of `down` [in, r] and `up` [r, out].
      alpha: the LoRA alpha; None means alpha = rank (scale 1, the diffusers/peft default).
      targets: names of the Dense modules (last path key) whose `kernel` is adapted.
    """

    rank: int = 4
    alpha: float | None = None
    targets: tuple[str, ...] = UNET_ATTENTION_TARGETS

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoraConfig.rank must be an integer >= 1, got {self.rank!r}.")
        if self.alpha is not None and not (
            isinstance(self.alpha, numbers.Real)
            and not isinstance(self.alpha, bool)
            and math.isfinite(self.alpha)
            and self.alpha > 0
        ):
            raise ValueError(
                f"LoraConfig.alpha must be a positive number or None (= rank), got {self.alpha!r}."
            )
        if isinstance(self.targets, str):
            raise ValueError(
                f"LoraConfig.targets must be a tuple of module names, got the string "
                f"{self.targets!r}; write ({self.targets!r},)."
            )
        targets = tuple(self.targets)
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(
                f"LoraConfig.targets must name at least one Dense module, e.g. "
                f"{UNET_ATTENTION_TARGETS}; got {self.targets!r}."
            )
        object.__setattr__(self, "targets", targets)

    @property
    def scale(self) -> float:
        """alpha / rank: the factor on `down @ up`."""
        return (self.rank if self.alpha is None else float(self.alpha)) / self.rank


def _value(leaf: Any) -> Any:
    """The array inside a flax metadata box (e.g. `LogicallyPartitioned`), or the leaf itself."""
    return leaf.unbox() if isinstance(leaf, nn.meta.AxisMetadata) else leaf


def _is_lora_module(node: Any) -> bool:
    return (
        isinstance(node, Mapping)
        and set(node) == {"down", "up"}
        and not any(isinstance(v, Mapping) for v in node.values())
    )


def lora_target_paths(base_params: Mapping[str, Any], config: LoraConfig) -> list[ModulePath]:
    """Module paths (tuples of keys) whose last key is a target and that hold a 2-D `kernel`.

    Args:
      base_params: a parameter tree (arrays, `jax.ShapeDtypeStruct`s or flax metadata boxes),
        without the top-level `"params"` collection key.
      config: the LoRA config (only `targets` is used).

    Returns:
      The sorted paths, e.g. `("middle_block_1", "transformer_blocks_0", "attn1", "to_q")`.

    Raises:
      ValueError: when no module matches, naming the targets.
    """
    found: list[ModulePath] = []

    def walk(node: Mapping[str, Any], path: ModulePath) -> None:
        for key, sub in node.items():
            if not isinstance(sub, Mapping):
                continue
            here = (*path, key)
            kernel = sub.get("kernel")
            if key in config.targets and kernel is not None and len(_value(kernel).shape) == 2:
                found.append(here)
            walk(sub, here)

    walk(base_params, ())
    if not found:
        raise ValueError(
            f"No Dense module named one of {config.targets} with a 2-D kernel in the parameter "
            "tree (pass the tree under 'params'; U-Net attention uses "
            f"{UNET_ATTENTION_TARGETS}, the CLIP text encoder {CLIP_ATTENTION_TARGETS})."
        )
    return sorted(found)


def _get(tree: Mapping[str, Any], path: ModulePath) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def init_lora_params(
    rng: jax.Array, base_params: Mapping[str, Any], config: LoraConfig
) -> dict[str, Any]:
    """Fresh float32 LoRA parameters for every target module of `base_params`.

    `down` [in, r] is initialised like peft's default `lora_A` (`init_lora_weights=True`:
    `kaiming_uniform_(a=sqrt(5))`, i.e. uniform on +-1/sqrt(in)); `up` [r, out] is zero, so the
    merged model equals the base model at initialisation. Only shapes of `base_params` are read,
    so this also runs under `jax.jit` / `jax.eval_shape`.

    Args:
      rng: a PRNG key.
      base_params: the model's parameter tree.
      config: the LoRA config.

    Returns:
      A nested dict mirroring `base_params` down to each target module, holding `down` and `up`.
    """
    paths = lora_target_paths(base_params, config)
    keys = jax.random.split(rng, len(paths))
    out: dict[str, Any] = {}
    for key, path in zip(keys, paths, strict=True):
        fan_in, fan_out = _value(_get(base_params, path)["kernel"]).shape
        bound = 1.0 / math.sqrt(fan_in)
        node = out
        for k in path:
            node = node.setdefault(k, {})
        node["down"] = jax.random.uniform(key, (fan_in, config.rank), jnp.float32, -bound, bound)
        node["up"] = jnp.zeros((config.rank, fan_out), jnp.float32)
    return out


def _merge_kernel(kernel: Any, down: jax.Array, up: jax.Array, scale: float, where: str) -> Any:
    array = _value(kernel)
    if down.ndim != 2 or up.ndim != 2 or (down.shape[0], up.shape[1]) != tuple(array.shape):
        raise ValueError(
            f"LoRA at {where}: down {tuple(down.shape)} @ up {tuple(up.shape)} does not fit the "
            f"kernel of shape {tuple(array.shape)} (expected down [in, r], up [r, out])."
        )
    if down.shape[1] != up.shape[0]:
        raise ValueError(
            f"LoRA at {where}: down {tuple(down.shape)} and up {tuple(up.shape)} differ in rank."
        )
    delta = jnp.matmul(
        down.astype(jnp.float32), up.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST
    )  # [in, out]
    merged = (array.astype(jnp.float32) + scale * delta).astype(array.dtype)
    if isinstance(kernel, nn.meta.AxisMetadata):
        return kernel.replace_boxed(merged)
    return merged


def merge_lora(
    base_params: Mapping[str, Any], lora_params: Mapping[str, Any], config: LoraConfig
) -> dict[str, Any]:
    """The base tree with `kernel + scale * down @ up` at every LoRA module.

    The update is computed in float32 and cast back to the kernel's dtype; every other leaf is
    passed through untouched (flax metadata boxes keep their metadata). Works under `jax.jit` and
    is differentiable with respect to both trees.

    Args:
      base_params: the model's parameter tree.
      lora_params: a tree from `init_lora_params` (or `load_diffusers_lora`).
      config: the LoRA config (only `scale` is used).

    Returns:
      A tree with the structure of `base_params`.

    Raises:
      ValueError: a LoRA module that the base tree does not have, or mis-shaped matrices.
    """
    scale = config.scale

    def merge(base: Mapping[str, Any], lora: Mapping[str, Any], path: ModulePath) -> dict:
        out = dict(base)
        if _is_lora_module(lora):
            where = "/".join(path)
            if "kernel" not in base:
                raise ValueError(f"LoRA at {where}: the base module has no 'kernel'.")
            out["kernel"] = _merge_kernel(base["kernel"], lora["down"], lora["up"], scale, where)
            return out
        for key, sub in lora.items():
            if not isinstance(base.get(key), Mapping):
                raise ValueError(
                    f"LoRA parameters at {'/'.join((*path, key))} name no module of the base "
                    f"tree (its keys here: {sorted(base)[:8]})."
                )
            out[key] = merge(base[key], sub, (*path, key))
        return out

    return merge(base_params, lora_params, ())


def lora_modules(lora_params: Mapping[str, Any]) -> list[ModulePath]:
    """The sorted module paths of a LoRA tree (each holds `down` and `up`)."""
    found: list[ModulePath] = []

    def walk(node: Mapping[str, Any], path: ModulePath) -> None:
        if _is_lora_module(node):
            found.append(path)
            return
        for key, sub in node.items():
            if isinstance(sub, Mapping):
                walk(sub, (*path, key))

    walk(lora_params, ())
    return sorted(found)


def lora_param_count(lora_params: Mapping[str, Any]) -> int:
    """The number of scalars in a LoRA tree."""
    return int(sum(math.prod(_value(x).shape) for x in jax.tree.leaves(lora_params)))


def targets_of(paths: Sequence[ModulePath]) -> tuple[str, ...]:
    """The distinct last keys of `paths`, in first-seen order."""
    return tuple(dict.fromkeys(p[-1] for p in paths))
