"""Turns a paper-style model config into modules, example inputs and parameter counts.

A model config (`configs/paper/*.py`, `configs/sd/*.py`, field `model`) has up to three parts,
each a mapping mirroring the reference YAML's `*_config.params`:

  first_stage: kind "kl" | "vq" and the `ddconfig` (+ embed_dim, n_embed), or "identity"
               (pixel space: no network, f = 1);
  unet:        the reference `UNetModel` arguments (image_size, in_channels, ...);
  cond_stage:  kind "none" | "class" | "bert" | "spatial_rescaler" | "identity" |
               "first_stage" | "frozen_clip" | "frozen_openclip" | "frozen_minilm" and its
               arguments.

Each part is read into its typed section (`models.specs`, `models.cond_specs`: the one list of
fields, with the reference defaults; an unknown field is an error naming the closest valid one),
and the module is built from the section's `module_kwargs()`. Every builder takes the mapping or
the typed section.

Parameters are counted with `jax.eval_shape`: no weights are materialised, so the full-size
models (up to 1.45B parameters) are counted in seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.models.cond_specs import CondStageConfig
from ldm_jax.models.conditioning import ClassEmbedder, IdentityEncoder, SpatialRescaler
from ldm_jax.models.identity_first_stage import IdentityFirstStage
from ldm_jax.models.latent_denoiser import LatentDenoiser
from ldm_jax.models.minilm_encoder import frozen_minilm
from ldm_jax.models.specs import FirstStageConfig, Spec, UNetConfig
from ldm_jax.models.text_encoder import BERTEmbedder
from ldm_jax.models.unet import UNetModel
from ldm_jax.models.vq_autoencoder import VQModel

# The module each kind builds.
FIRST_STAGE_MODULES = {"kl": AutoencoderKL, "vq": VQModel, "identity": IdentityFirstStage}
FirstStage = AutoencoderKL | VQModel | IdentityFirstStage
# First stages with no parameters (no stage 1 to train, no checkpoint to read).
PARAMETER_FREE_FIRST_STAGES = ("identity",)
COND_STAGE_MODULES = {
    "class": ClassEmbedder,
    "bert": BERTEmbedder,
    "spatial_rescaler": SpatialRescaler,
    "identity": IdentityEncoder,
}
# Condition encoders with no parameters of their own.
PARAMETER_FREE_COND_STAGES = ("none", "identity", "first_stage")
# Frozen pretrained text encoders that the paper-faithful code does not build (Stable Diffusion).
EXTERNAL_COND_STAGES = ("frozen_clip", "frozen_openclip")
# Frozen pretrained text encoders run outside the denoiser (`frozen_text_encoder`): the denoiser
# takes their context; their weights come from a package, never from (or into) a checkpoint.
FROZEN_TEXT_ENCODERS = ("frozen_minilm",)


def first_stage_config(cfg: Mapping[str, Any] | Spec) -> Any:
    """The typed `first_stage` section (`KLConfig`, `VQConfig` or `IdentityConfig`)."""
    return FirstStageConfig.from_dict(cfg)


def first_stage_kind_of(module: nn.Module) -> str:
    """The `kind` ("kl" | "vq" | "identity") of a first-stage module.

    Raises:
      TypeError: for a module that is no first stage.
    """
    for kind, cls in FIRST_STAGE_MODULES.items():
        if type(module) is cls:
            return kind
    raise TypeError(
        f"{type(module).__name__} is not a first stage ({', '.join(FIRST_STAGE_MODULES)})."
    )


def has_deterministic_latents(module: nn.Module) -> bool:
    """Whether a first-stage module's latent is used as it is (VQ: h before quantisation;
    identity: x), through `encode_to_prequant` / `decode_latent`, rather than sampled from a
    KL posterior (`encode(x).mean` / `decode`)."""
    return FirstStageConfig.KINDS[first_stage_kind_of(module)].DETERMINISTIC


def unet_config(cfg: Mapping[str, Any] | Spec) -> UNetConfig:
    """The typed `unet` section; the reference's run-time options `use_checkpoint` and
    `use_fp16` are dropped (here they are `train.remat` and `train.compute_dtype`)."""
    if not isinstance(cfg, Spec):
        cfg = {k: v for k, v in cfg.items() if k not in UNetConfig.RUNTIME_REFERENCE_FIELDS}
    return UNetConfig.from_dict(cfg)


def cond_stage_config(cfg: Mapping[str, Any] | Spec | None) -> Any:
    """The typed `cond_stage` section; None (no section) is kind "none"."""
    return CondStageConfig.from_dict({"kind": "none"} if cfg is None else cfg)


def build_first_stage(cfg: Mapping[str, Any] | Spec) -> FirstStage:
    """A KL or VQ autoencoder (kind, ddconfig fields, embed_dim, n_embed) or the identity
    first stage (kind "identity", in_channels) from `first_stage`."""
    spec = first_stage_config(cfg)
    return FIRST_STAGE_MODULES[spec.KIND](**spec.module_kwargs())


def build_unet(cfg: Mapping[str, Any] | Spec) -> UNetModel:
    """The U-Net from the reference `unet_config.params` (defaults as the reference).

    One extension: `use_spatial_transformer` without `context_dim` (which the reference refuses)
    gives transformers whose second attention is self-attention, as the unconditional quickstart.
    """
    return UNetModel(**unet_config(cfg).module_kwargs())


def build_cond_stage(cfg: Mapping[str, Any] | Spec | None) -> nn.Module | None:
    """tau_theta from `cond_stage`; None for parameter-free or external encoders."""
    spec = cond_stage_config(cfg)
    module = COND_STAGE_MODULES.get(spec.KIND)
    return None if module is None else module(**spec.module_kwargs())


def frozen_text_encoder(
    cfg: Mapping[str, Any] | Spec | None,
) -> Callable[[Sequence[str]], np.ndarray] | None:
    """The captions -> context [N, L, D] function of a frozen text encoder ("frozen_minilm"),
    or None for every other cond stage."""
    spec = cond_stage_config(cfg)
    if spec.KIND == "frozen_minilm":
        return frozen_minilm(spec.max_length)
    return None


def build_latent_denoiser(model_cfg: Mapping[str, Any]) -> LatentDenoiser:
    """U-Net + tau_theta + `conditioning_key` of a model config as one `LatentDenoiser`."""
    return LatentDenoiser(
        diffusion_model=build_unet(model_cfg["unet"]),
        cond_stage_model=build_cond_stage(model_cfg.get("cond_stage")),
        conditioning_key=model_cfg.get("conditioning_key"),
    )


def example_inputs(part: str, cfg: Mapping[str, Any] | Spec) -> tuple[jax.ShapeDtypeStruct, ...]:
    """Abstract inputs (batch 1) that `init` needs to create every parameter of a part."""
    f32, i32 = jnp.float32, jnp.int32
    if part == "first_stage":
        fs = first_stage_config(cfg)
        side = getattr(fs, "resolution", 8)  # identity: no parameters, any side
        return (jax.ShapeDtypeStruct((1, side, side, fs.in_channels), f32),)
    if part == "unet":
        u = unet_config(cfg)
        x = jax.ShapeDtypeStruct((1, u.image_size, u.image_size, u.in_channels), f32)
        t = jax.ShapeDtypeStruct((1,), i32)
        ctx = None if u.context_dim is None else jax.ShapeDtypeStruct((1, 1, u.context_dim), f32)
        y = None if u.num_classes is None else jax.ShapeDtypeStruct((1,), i32)
        return (x, t, ctx, y)
    if part == "cond_stage":
        cond = cond_stage_config(cfg)
        if cond.KIND == "class":
            return (jax.ShapeDtypeStruct((1,), i32),)
        if cond.KIND == "bert":
            return (jax.ShapeDtypeStruct((1, cond.max_seq_len), i32),)
        if cond.KIND in ("spatial_rescaler", "identity"):
            channels = getattr(cond, "in_channels", 3)
            return (jax.ShapeDtypeStruct((1, 16, 16, channels), f32),)
    raise ValueError(f"No example inputs for part {part!r}.")


def abstract_params(module: nn.Module, inputs: tuple[Any, ...]) -> Any:
    """The parameter tree of `module` as `jax.ShapeDtypeStruct`s (nothing is allocated)."""
    variables = jax.eval_shape(lambda *a: nn.unbox(module.init(jax.random.PRNGKey(0), *a)), *inputs)
    return variables.get("params", {})


def count_params(tree: Any) -> int:
    """Total number of scalars in a parameter tree (arrays or ShapeDtypeStructs)."""
    return int(sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree)))


def build_part(model_cfg: Mapping[str, Any], part: str) -> tuple[nn.Module | None, Any]:
    """(module, example inputs) for part "unet", "first_stage" or "cond_stage"."""
    cfg = model_cfg.get(part)
    if cfg is None:
        return None, None
    if part == "unet":
        return build_unet(cfg), example_inputs(part, cfg)
    if part == "first_stage":
        return build_first_stage(cfg), example_inputs(part, cfg)
    module = build_cond_stage(cfg)
    return module, (None if module is None else example_inputs(part, cfg))


def part_params(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Abstract parameter trees per part: {} for parameter-free parts, None for absent or
    external (frozen, not built or run outside the denoiser) ones."""
    out = {}
    for part in ("unet", "first_stage", "cond_stage"):
        module, inputs = build_part(model_cfg, part)
        if module is not None:
            out[part] = abstract_params(module, inputs)
            continue
        cfg = model_cfg.get(part)
        kind = None if cfg is None else cond_stage_config(cfg).KIND
        built_nothing = kind is None or kind in EXTERNAL_COND_STAGES + FROZEN_TEXT_ENCODERS
        out[part] = None if built_nothing else {}
    return out


def param_counts(model_cfg: Mapping[str, Any]) -> dict[str, int | None]:
    """{"unet": N, "first_stage": N, "cond_stage": N}; None where a part is absent/external."""
    return {k: None if v is None else count_params(v) for k, v in part_params(model_cfg).items()}
