"""LoRA weights in the diffusers file format (`pytorch_lora_weights.safetensors`).

    save_diffusers_lora("out/lora", unet_lora, config, unet.num_res_blocks)
    # diffusers: pipe.load_lora_weights("out/lora") or unet.load_lora_adapter(..., prefix="unet")
    unet_lora, config, te_lora = load_diffusers_lora("out/lora", params, unet.num_res_blocks)

Tensor names are diffusers module names plus peft's suffixes, in PyTorch layout:
  unet.<module>.lora_A.weight [r, in] = down.T        unet.<module>.lora_B.weight [out, r] = up.T
  text_encoder.text_model.encoder.layers.{i}.self_attn.q_proj.lora_A.weight  (our layers_{i}/...)
where <module> is our U-Net module path renamed by `diffusers_names.unet_to_diffusers`
(`middle_block_1/transformer_blocks_0/attn1/to_out_0` -> `mid_block.attentions.0.
transformer_blocks.0.attn1.to_out.0`).

The scale alpha / rank is stored the way diffusers 0.42 reads it: the safetensors header entry
`lora_adapter_metadata`, a JSON dict of peft `LoraConfig` fields packed per component
(`{"unet.r": 4, "unet.lora_alpha": 8.0, "unet.target_modules": [...], ...}`), which diffusers
passes to `peft.LoraConfig(**...)`. Without that entry diffusers assumes alpha = rank, so a
diffusers version that predates the entry loads our files with scale 1.

Reading also accepts the files diffusers writes itself (`save_lora_weights` with or without that
metadata, a model-level `save_lora_adapter` with unprefixed keys), the older diffusers names
(`.lora.down.weight` / `.lora.up.weight`, `.processor.to_q_lora.down.weight`,
`.lora_linear_layer.down.weight`) and kohya-ss SD 1.x/2.x files
(`lora_unet_<module>.lora_down.weight`, `.lora_up.weight`, `.alpha`; `lora_te_...` for the text
encoder). Per-module scales (peft `alpha_pattern` / `rank_pattern`, `use_rslora`, kohya `.alpha`)
are honoured: the returned config has the most common rank and scale, and modules whose scale
differs have the ratio folded into `up`, so `merge_lora` gives exactly the adapted weights
diffusers would use.
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax.core.meta import AxisMetadata
from safetensors.numpy import save_file

from ldm_jax.interop import diffusers_names as names
from ldm_jax.interop.safetensors_file import read_header, read_safetensors
from ldm_jax.interop.tensors import dtype_problem, flax_path_to_compvis, flax_path_to_xtransformers
from ldm_jax.interop.torch_pickle import load_state_dict
from ldm_jax.models.lora import (
    CLIP_ATTENTION_TARGETS,
    UNET_ATTENTION_TARGETS,
    LoraConfig,
    ModulePath,
    lora_modules,
    targets_of,
)

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
METADATA_KEY = "lora_adapter_metadata"
UNET, TEXT_ENCODER = "unet", "text_encoder"
_KOHYA = {"lora_unet_": UNET, "lora_te_": TEXT_ENCODER}
_SUFFIXES = {  # tensor-name ending -> role (the module name is what precedes it)
    ".lora_A.weight": "down",
    ".lora_B.weight": "up",
    ".lora.down.weight": "down",
    ".lora.up.weight": "up",
    ".lora_linear_layer.down.weight": "down",
    ".lora_linear_layer.up.weight": "up",
    ".lora_down.weight": "down",
    ".lora_up.weight": "up",
    ".alpha": "alpha",
}
_OLD_PROCESSOR = re.compile(
    r"(.*?)(?:\.processor)?\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight"
)
_OLD_PROCESSOR_TARGET = {
    UNET: {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"},
    TEXT_ENCODER: {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"},
}


class LoraFormatError(ValueError):
    """A LoRA file that does not fit the model or that ldm_jax cannot express."""


def unet_module_name(path: ModulePath, num_res_blocks: int) -> str:
    """Our U-Net Dense module path -> its diffusers module name."""
    name = names.unet_to_diffusers(flax_path_to_compvis((*path, "kernel")), num_res_blocks)
    return name.removesuffix(".weight")


def clip_module_name(path: ModulePath) -> str:
    """Our CLIP text-encoder module path -> the transformers `CLIPTextModel` module name.

    `("layers_3", "self_attn", "q_proj")` -> `text_model.encoder.layers.3.self_attn.q_proj`.
    """
    dotted = flax_path_to_xtransformers((*path, "kernel")).removesuffix(".weight")
    if dotted.startswith("layers."):
        return "text_model.encoder." + dotted
    return dotted if dotted.startswith("text_model.") else "text_model." + dotted


def _file_of(path: str) -> str:
    if path.endswith((".safetensors", ".bin")):
        return path
    return os.path.join(path, LORA_WEIGHTS_NAME)


def _component_tensors(
    lora: Mapping[str, Any], config: LoraConfig, prefix: str, name_of: Any
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    tensors, modules, rank_pattern, alpha_pattern = {}, [], {}, {}
    for path in lora_modules(lora):
        node = lora
        for key in path:
            node = node[key]
        down, up = np.asarray(node["down"], np.float32), np.asarray(node["up"], np.float32)
        if down.ndim != 2 or up.ndim != 2 or down.shape[1] != up.shape[0]:
            raise LoraFormatError(
                f"LoRA at {'/'.join(path)}: down {down.shape} and up {up.shape} are not "
                "[in, r] and [r, out]."
            )
        name = name_of(path)
        modules.append(name)
        tensors[f"{prefix}.{name}.lora_A.weight"] = np.ascontiguousarray(down.T)  # [r, in]
        tensors[f"{prefix}.{name}.lora_B.weight"] = np.ascontiguousarray(up.T)  # [out, r]
        rank = down.shape[1]
        if rank != config.rank:  # peft: scaling = alpha / r per module; keep ours
            rank_pattern[name] = rank
            alpha_pattern[name] = config.scale * rank
    metadata = {
        "r": config.rank,
        "lora_alpha": config.scale * config.rank,
        "target_modules": modules,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "init_lora_weights": True,
        "use_dora": False,
        "use_rslora": False,
        "lora_bias": False,
    }
    return tensors, metadata


def save_diffusers_lora(
    path: str,
    unet_lora: Mapping[str, Any],
    config: LoraConfig,
    num_res_blocks: int,
    text_encoder_lora: Mapping[str, Any] | None = None,
    text_encoder_config: LoraConfig | None = None,
) -> str:
    """Writes LoRA weights as a diffusers `pytorch_lora_weights.safetensors`.

    Args:
      path: a folder (created; the file is `pytorch_lora_weights.safetensors` inside, which is
        what `pipe.load_lora_weights(folder)` looks for) or a `.safetensors` file path.
      unet_lora: the U-Net's LoRA tree (`init_lora_params` on the U-Net params); may be empty.
      config: its config (the scale is stored, see the module docstring).
      num_res_blocks: the U-Net's `num_res_blocks` (needed to name its blocks).
      text_encoder_lora: optionally, the CLIP text encoder's LoRA tree
        (`layers_{i}/self_attn/q_proj/{down,up}`).
      text_encoder_config: its config; defaults to `config`.

    Returns:
      The file written.
    """
    file = _file_of(path)
    if not file.endswith(".safetensors"):
        raise LoraFormatError(f"{path}: LoRA files are written as .safetensors only.")
    tensors, metadata = {}, {}
    parts = [(UNET, unet_lora, config, lambda p: unet_module_name(p, num_res_blocks))]
    if text_encoder_lora:
        # diffusers strips `text_model.` from keys for flattened CLIPTextModels (transformers 5)
        # but not from target_modules; a name without it matches both layouts as a suffix.
        te_name = lambda p: clip_module_name(p).removeprefix("text_model.")
        parts.append((TEXT_ENCODER, text_encoder_lora, text_encoder_config or config, te_name))
    for prefix, lora, cfg, name_of in parts:
        if not lora:
            continue
        t, meta = _component_tensors(lora, cfg, prefix, name_of)
        if prefix == TEXT_ENCODER:  # tensor keys carry the full transformers name
            t = {
                k.replace(f"{TEXT_ENCODER}.", f"{TEXT_ENCODER}.text_model.", 1): v
                for k, v in t.items()
            }
        tensors.update(t)
        metadata.update({f"{prefix}.{k}": v for k, v in meta.items()})
    if not tensors:
        raise LoraFormatError("Nothing to save: both LoRA trees are empty.")
    os.makedirs(os.path.dirname(file) or ".", exist_ok=True)
    header = {"format": "pt", METADATA_KEY: json.dumps(metadata, indent=2, sort_keys=True)}
    save_file(tensors, file, metadata=header)
    return file


# ---------------------------------------------------------------------------------------------
# Reading


def _read(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    file = path
    if os.path.isdir(path):
        file = os.path.join(path, LORA_WEIGHTS_NAME)
        if not os.path.exists(file):
            found = sorted(f for f in os.listdir(path) if f.endswith((".safetensors", ".bin")))
            if len(found) != 1:
                raise FileNotFoundError(
                    f"No {LORA_WEIGHTS_NAME} in {path} (and not exactly one other LoRA file: "
                    f"{found}); pass the file path."
                )
            file = os.path.join(path, found[0])
    if not os.path.exists(file):
        raise FileNotFoundError(f"{file} not found.")
    if file.endswith(".bin"):
        return {k: np.asarray(v) for k, v in load_state_dict(file).items()}, None
    _, header = read_header(file)
    tensors = read_safetensors(file)
    raw = header.get(METADATA_KEY)
    return tensors, (json.loads(raw) if raw else None)


def _parse_key(key: str, has_prefixes: bool) -> tuple[str, str, str]:
    """A tensor name -> (component, module name as written, role in down/up/alpha)."""
    for start, component in _KOHYA.items():
        if key.startswith(start):
            module, _, rest = key.partition(".")
            role = _SUFFIXES.get("." + rest)
            if role is None:
                raise LoraFormatError(f"Tensor {key!r}: unknown kohya LoRA tensor kind {rest!r}.")
            return component, "kohya:" + module[len(start) :], role
    if key.startswith(("lora_te1_", "lora_te2_")):
        raise LoraFormatError(f"Tensor {key!r}: SDXL text-encoder LoRA is not supported.")
    component, rest = UNET, key
    for prefix in (UNET, TEXT_ENCODER):
        if key.startswith(prefix + "."):
            component, rest = prefix, key[len(prefix) + 1 :]
            break
    else:
        if has_prefixes:
            raise LoraFormatError(
                f"Tensor {key!r} starts with neither 'unet.' nor 'text_encoder.'."
            )
    if "lora_magnitude_vector" in rest or "dora_scale" in rest:
        raise LoraFormatError(f"Tensor {key!r}: DoRA is not supported, only plain LoRA.")
    if rest.endswith(".lora_B.bias"):
        raise LoraFormatError(f"Tensor {key!r}: LoRA biases (peft lora_bias) are not supported.")
    m = _OLD_PROCESSOR.fullmatch(rest)
    if m:
        module = f"{m.group(1)}.{_OLD_PROCESSOR_TARGET[component][m.group(2)]}"
        return component, module, m.group(3)
    for suffix, role in _SUFFIXES.items():
        if rest.endswith(suffix):
            return component, rest[: -len(suffix)], role
    raise LoraFormatError(f"Tensor {key!r} is not a LoRA tensor (lora_A/lora_B/alpha).")


def _dense_modules(params: Mapping[str, Any]) -> dict[ModulePath, tuple[int, int]]:
    """Every module path holding a 2-D `kernel`, with the kernel's [in, out] shape."""
    out = {}

    def walk(node: Mapping[str, Any], path: ModulePath) -> None:
        for key, sub in node.items():
            if isinstance(sub, Mapping):
                walk(sub, (*path, key))
            elif key == "kernel":
                shape = tuple((sub.unbox() if isinstance(sub, AxisMetadata) else sub).shape)
                if len(shape) == 2:
                    out[path] = shape

    walk(params, ())
    return out


def _name_index(modules: Mapping[ModulePath, Any], name_of: Any) -> dict[str, ModulePath]:
    index = {}
    for path in modules:
        name = name_of(path)
        index[name] = path
        index["kohya:" + name.replace(".", "_")] = path
    return index


def _peft_scale(meta: Mapping[str, Any], name: str, rank: int) -> float:
    """peft's `scaling` for module `name` under a LoraConfig dict (pattern keys are regexes;
    peft's default lora_alpha is 8)."""

    def lookup(pattern: Mapping[str, Any], default: Any) -> Any:
        for key, value in (pattern or {}).items():
            if re.match(rf"(.*\.)?({key})$", name):
                return value
        return default

    alpha = float(lookup(meta.get("alpha_pattern"), meta.get("lora_alpha", 8)))
    return alpha / (math.sqrt(rank) if meta.get("use_rslora") else rank)


def _split_metadata(
    metadata: Mapping[str, Any] | None, has_prefixes: bool
) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {UNET: None, TEXT_ENCODER: None}
    if not metadata:
        return out
    for component in out:
        packed = {
            k[len(component) + 1 :]: v for k, v in metadata.items() if k.startswith(component + ".")
        }
        out[component] = packed or None
    if out[UNET] is None and not has_prefixes and "r" in metadata:
        out[UNET] = dict(metadata)  # a model-level `save_lora_adapter` file: unprefixed
    for component, meta in out.items():
        if meta and (meta.get("use_dora") or meta.get("lora_bias")):
            raise LoraFormatError(
                f"The {component} LoRA metadata asks for use_dora/lora_bias, which ldm_jax "
                "does not support."
            )
    return out


def load_diffusers_lora(
    path: str,
    unet_params: Mapping[str, Any],
    num_res_blocks: int,
    clip_params: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], LoraConfig, dict[str, Any] | None]:
    """Reads a diffusers, peft or kohya LoRA file into our LoRA trees.

    Args:
      path: a folder holding `pytorch_lora_weights.safetensors` (or exactly one other
        `.safetensors`/`.bin`), or the file itself.
      unet_params: the U-Net's parameter tree (names and shapes are checked against it).
      num_res_blocks: the U-Net's `num_res_blocks`.
      clip_params: the CLIP text encoder's parameter tree; required when the file holds
        text-encoder LoRA.

    Returns:
      (unet_lora, config, text_encoder_lora or None). `config` holds the most common rank and
      scale (alpha = scale * rank; None when the scale is 1) and the targets found; it applies to
      both trees, modules whose stored scale differs have the ratio folded into `up`.

    Raises:
      LoraFormatError: tensors that name no Dense module of the model, mis-shaped or incomplete
        pairs, A/B matrices not stored as float32/float16/bfloat16, text-encoder LoRA without
        `clip_params`, or unsupported variants (DoRA, biases).
    """
    tensors, metadata = _read(path)
    if not tensors:
        raise LoraFormatError(f"{path}: the file holds no tensors.")
    has_prefixes = any(k.startswith((UNET + ".", TEXT_ENCODER + ".")) for k in tensors)
    metas = _split_metadata(metadata, has_prefixes)

    parts: dict[tuple[str, str], dict[str, np.ndarray]] = collections.defaultdict(dict)
    typed = []
    for key, value in tensors.items():
        component, module, role = _parse_key(key, has_prefixes)
        if role in parts[component, module]:
            raise LoraFormatError(f"Tensor {key!r}: a second {role!r} for module {module!r}.")
        problem = None if role == "alpha" else dtype_problem(value, np.float32)
        if problem is not None:
            typed.append(f"tensor {key!r} is {problem}")
        parts[component, module][role] = np.asarray(value, np.float32)
    if typed:
        raise LoraFormatError(
            f"The LoRA file {path} has tensors of the wrong dtype: " + "; ".join(typed)
        )

    models = {UNET: unet_params, TEXT_ENCODER: clip_params}
    namers = {
        UNET: lambda p: unet_module_name(p, num_res_blocks),
        TEXT_ENCODER: clip_module_name,
    }
    indices, shapes = {}, {}
    problems: list[str] = []
    found: dict[str, list[tuple[ModulePath, np.ndarray, np.ndarray, float]]] = {
        UNET: [],
        TEXT_ENCODER: [],
    }
    for (component, module), roles in sorted(parts.items()):
        if models[component] is None:
            raise LoraFormatError(
                f"{path} holds text-encoder LoRA ({module!r}, ...); pass clip_params to load it."
            )
        if component not in indices:
            shapes[component] = _dense_modules(models[component])
            indices[component] = _name_index(shapes[component], namers[component])
        index = indices[component]
        lookup = module
        if component == TEXT_ENCODER and not module.startswith(("text_model.", "kohya:")):
            lookup = "text_model." + module  # flattened CLIPTextModel names (transformers 5)
        target = index.get(lookup)
        shown = module.removeprefix("kohya:")
        if target is None:
            problems.append(f"{component} module {shown!r} names no Dense module of the model")
            continue
        if "down" not in roles or "up" not in roles:
            problems.append(f"{component} module {shown!r} lacks its down (A) or up (B) matrix")
            continue
        down, up = roles["down"], roles["up"]  # [r, in], [out, r] (kohya may add 1x1 dims)
        down = down.reshape(down.shape[:2]) if down.ndim == 4 and down.shape[2:] == (1, 1) else down
        up = up.reshape(up.shape[:2]) if up.ndim == 4 and up.shape[2:] == (1, 1) else up
        fan_in, fan_out = shapes[component][target]
        if (
            down.ndim != 2
            or up.ndim != 2
            or down.shape[1] != fan_in
            or up.shape[0] != fan_out
            or down.shape[0] != up.shape[1]
        ):
            problems.append(
                f"{component} module {shown!r}: A {down.shape} / B {up.shape} do not fit the "
                f"kernel [in, out] = {(fan_in, fan_out)} (expected A [r, in], B [out, r])"
            )
            continue
        rank = down.shape[0]
        if "alpha" in roles:
            scale = float(np.asarray(roles["alpha"]).reshape(())) / rank
        elif metas[component] is not None:
            scale = _peft_scale(metas[component], module.removeprefix("text_model."), rank)
        else:
            scale = 1.0  # diffusers / kohya convention without alpha: alpha = rank
        found[component].append((target, down.T, up.T, scale))
    if problems:
        raise LoraFormatError(
            f"The LoRA file {path} does not fit the model: " + "; ".join(problems)
        )

    main = found[UNET] or found[TEXT_ENCODER]
    rank = collections.Counter(d.shape[1] for _, d, _, _ in main).most_common(1)[0][0]
    scale = collections.Counter(s for *_, s in main).most_common(1)[0][0]
    alpha = None if math.isclose(scale, 1.0, rel_tol=1e-12) else scale * rank
    known = UNET_ATTENTION_TARGETS + CLIP_ATTENTION_TARGETS
    targets = sorted(
        targets_of([p for p, *_ in main]),
        key=lambda t: (known.index(t), "") if t in known else (len(known), t),
    )
    config = LoraConfig(rank=rank, alpha=alpha, targets=tuple(targets))

    def tree(entries: list) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for target, down, up, s in entries:
            node = out
            for key in target:
                node = node.setdefault(key, {})
            ratio = np.float32(s / config.scale)
            node["down"] = np.ascontiguousarray(down)  # [in, r]
            node["up"] = np.ascontiguousarray(up if ratio == 1 else up * ratio)  # [r, out]
        return out

    return tree(found[UNET]), config, (tree(found[TEXT_ENCODER]) if found[TEXT_ENCODER] else None)
