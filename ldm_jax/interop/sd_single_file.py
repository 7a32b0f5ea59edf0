"""Reads an original Stable Diffusion single file (v1, v2, v2-v, inpainting) as pipeline parts.

The files released by CompVis, RunwayML and Stability AI (`v1-5-pruned-emaonly.safetensors`,
`v2-1_768-ema-pruned.ckpt`, `sd-v1-5-inpainting.ckpt`, ...) hold one LatentDiffusion state dict:

  model.diffusion_model.*   the U-Net (`model_ema.*`: its EMA copy, names without dots)
  first_stage_model.*       the KL autoencoder (f = 8, 4 latent channels)
  cond_stage_model.*        v1: transformers' CLIP ViT-L/14 under `transformer.text_model.`;
                            v2: OpenCLIP ViT-H/14 (text tower) under `model.`
  betas, alphas_cumprod...  training buffers (the schedule is checked against `betas`)

Our U-Net and autoencoder parameter names are the original ones, so those parts load with the
paper-checkpoint loader's mapping (`compvis`); the text towers with `clip_weights`. What the file
does not say comes from the released models' YAMLs (U-Net, KL f = 8 autoencoder, schedule: the
"sd_v1" / "sd_v2", "kl_f8" and "sd" presets of `config/presets.py`), or from the YAML given
(`v1-inference.yaml`, `v2-inference-v.yaml`, ... or a non-standard model's own). The tokenizer is
not in the file either: a CLIP tokenizer folder is needed (any SD pipeline's `tokenizer/`).

Detection, from the tensor names and shapes:
  version   CLIP under `cond_stage_model.transformer.text_model.` -> v1 ("frozen_clip", its last
            layer); OpenCLIP under `cond_stage_model.model.` -> v2 ("frozen_openclip", the
            penultimate of its layers, all of which are kept, as `FrozenOpenCLIPEmbedder`).
  task      input channels of `model.diffusion_model.input_blocks.0.0.weight`: 4 text-to-image,
            9 inpainting (conditioning "hybrid").
  heads     not in the shapes: the text tower's width / 64 (every CLIP and OpenCLIP text tower
            SD uses: ViT-L/14 768 / 12, ViT-H/14 1024 / 16).
The prediction type is not in the weights: v1 is epsilon, a v2 file needs --prediction_type
(768-v models: v_prediction; 512-base and inpainting: epsilon) or a YAML that says it.

A `.ckpt` is read only through the restricted unpickler (`torch_pickle`): nothing in it runs.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import numpy as np
import yaml
from absl import logging

from ldm_jax import diffusion
from ldm_jax.interop import clip_weights
from ldm_jax.interop import compvis_config as ccfg
from ldm_jax.interop.compvis import (
    _SCHEDULE_BUFFERS,
    _read_tensors,
    _unet_params,
)
from ldm_jax.interop.diffusers_config import UnsupportedConfigError
from ldm_jax.interop.sd_pipeline import StableDiffusionParts
from ldm_jax.interop.tensors import (
    WeightMismatchError,
    abstract_params,
    assemble,
    flax_path_to_compvis,
)
from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.models.bpe_tokenizer import ClipTokenizer
from ldm_jax.models.clip_text import ClipTextConfig
from ldm_jax.models.unet import UNetModel

CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
SD1_TEXT = clip_weights.SD1_PREFIX  # cond_stage_model.transformer.text_model.
SD2_TEXT = clip_weights.OPENCLIP_PREFIX  # cond_stage_model.model.
SDXL_PREFIX = "conditioner.embedders."
LATENT_CHANNELS = 4
HEAD_WIDTH = 64
# The SD schedule (scaled_linear 0.00085 -> 0.012, 1000 steps) and latent scale, as the
# released YAMLs (and `config/presets.py` "sd") state them.
LINEAR_START, LINEAR_END, TIMESTEPS, SCALE_FACTOR = 0.00085, 0.012, 1000, 0.18215
# The released YAMLs' U-Net (`v1-inference.yaml`, `v2-inference(-v).yaml`, field by field, less
# the run-time options) and first stage (the same in both); `config/presets.py` names them
# "sd_v1", "sd_v2" and "kl_f8" (a test checks they build the same modules).
_UNET_V1 = dict(
    image_size=32,
    in_channels=4,
    out_channels=4,
    model_channels=320,
    attention_resolutions=[4, 2, 1],
    num_res_blocks=2,
    channel_mult=[1, 2, 4, 4],
    num_heads=8,
    use_spatial_transformer=True,
    transformer_depth=1,
    context_dim=768,
    legacy=False,
)
_UNET_V2 = dict(
    {k: v for k, v in _UNET_V1.items() if k != "num_heads"},
    num_head_channels=64,
    use_linear_in_transformer=True,
    context_dim=1024,
)
_KL_F8 = dict(
    embed_dim=4,
    ddconfig=dict(
        double_z=True,
        z_channels=4,
        resolution=256,
        in_channels=3,
        out_ch=3,
        ch=128,
        ch_mult=[1, 2, 4, 4],
        num_res_blocks=2,
        attn_resolutions=[],
        dropout=0.0,
    ),
)
PREDICTION_TYPES = ("epsilon", "v_prediction")
# The original YAML's `parameterization` -> the diffusers prediction type.
_PARAMETERIZATION = {"eps": "epsilon", "v": "v_prediction"}
# Per version: the cond kind, the text tensors' prefix, the standard U-Net and the YAML
# cond_stage_config target (ldm.modules.encoders.modules.*).
_VERSIONS = {
    "v1": ("frozen_clip", SD1_TEXT, _UNET_V1, "FrozenCLIPEmbedder"),
    "v2": ("frozen_openclip", SD2_TEXT, _UNET_V2, "FrozenOpenCLIPEmbedder"),
}
# The layer each version's context comes from (`layer` of the YAML's embedder).
_LAYERS = {"v1": "last", "v2": "penultimate"}
_MODEL_TARGETS = ("ddpm.LatentDiffusion", "ddpm.LatentInpaintDiffusion")
_NEEDS_PREDICTION_TYPE = (
    "{ckpt} is a Stable Diffusion 2 checkpoint, whose weights do not say what the U-Net "
    "predicts: pass --prediction_type v_prediction for a 768-v model (768x768, e.g. "
    "v2-1_768-ema-pruned) or --prediction_type epsilon for a 512-base or inpainting model."
)


@dataclasses.dataclass(frozen=True)
class SingleFileKind:
    """What a single file holds, read off its tensors.

    Attributes:
      version: "v1" (CLIP ViT-L/14 text encoder) or "v2" (OpenCLIP).
      in_channels: the U-Net's input channels (4 text-to-image, 9 inpainting).
    """

    version: str
    in_channels: int

    @property
    def cond_kind(self) -> str:
        return _VERSIONS[self.version][0]

    @property
    def text_prefix(self) -> str:
        return _VERSIONS[self.version][1]

    @property
    def inpainting(self) -> bool:
        return self.in_channels == 2 * LATENT_CHANNELS + 1


def _prefixes(tensors: dict[str, Any]) -> str:
    """The names' first two components, for messages ("model.diffusion_model, ...")."""
    found = sorted(
        {".".join(k.split(".")[: 1 if k.startswith("model_ema.") else 2]) for k in tensors}
    )
    more = f", ... ({len(found)} in all)" if len(found) > 8 else ""
    return ", ".join(found[:8]) + more


def detect(tensors: dict[str, Any], ckpt_path: str = "checkpoint") -> SingleFileKind:
    """Which Stable Diffusion a state dict is (see the module docstring for the rules).

    Raises:
      UnsupportedConfigError: SDXL, or no original SD v1/v2 layout (naming what was found).
    """
    if any(k.startswith(SDXL_PREFIX) for k in tensors):
        raise UnsupportedConfigError(
            f"{ckpt_path} is an SDXL checkpoint (conditioner.embedders.*: two text encoders), "
            "which ldm_jax does not implement; Stable Diffusion 1.x and 2.x files convert."
        )
    if CONV_IN not in tensors:
        raise UnsupportedConfigError(
            f"{ckpt_path} is not an original Stable Diffusion checkpoint: it has no {CONV_IN} "
            f"(found {_prefixes(tensors) or 'no tensors'})."
        )
    if f"{SD1_TEXT}embeddings.token_embedding.weight" in tensors:
        version = "v1"
    elif f"{SD2_TEXT}token_embedding.weight" in tensors:
        version = "v2"
    else:
        raise UnsupportedConfigError(
            f"{ckpt_path} has a Stable Diffusion U-Net but neither SD v1's CLIP "
            f"({SD1_TEXT}*) nor SD v2's OpenCLIP ({SD2_TEXT}*) text encoder (found "
            f"{_prefixes(tensors)})."
        )
    shape = tuple(np.shape(tensors[CONV_IN]))
    if len(shape) != 4 or shape[1] not in (LATENT_CHANNELS, 2 * LATENT_CHANNELS + 1):
        raise UnsupportedConfigError(
            f"{ckpt_path}: {CONV_IN} has shape {shape}; Stable Diffusion U-Nets take "
            f"{LATENT_CHANNELS} input channels (text-to-image) or {2 * LATENT_CHANNELS + 1} "
            "(inpainting); depth-to-image, upscaler and instruct models are not supported."
        )
    return SingleFileKind(version, int(shape[1]))


def _clip_config_from_hf(tensors: dict[str, Any], prefix: str) -> ClipTextConfig:
    """SD v1's CLIP architecture from its tensors' shapes (quick_gelu: CLIP ViT-L/14's)."""
    t = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    vocab, width = np.shape(t["embeddings.token_embedding.weight"])
    layers = {int(m.group(1)) for k in t if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    fc1 = "encoder.layers.0.mlp.fc1.weight"
    if not layers or fc1 not in t or "embeddings.position_embedding.weight" not in t:
        raise WeightMismatchError(
            f"CLIP text encoder: {prefix}encoder.layers.0.* or the position embedding is missing."
        )
    return ClipTextConfig(
        vocab_size=int(vocab),
        hidden_size=int(width),
        intermediate_size=int(np.shape(t[fc1])[0]),
        num_layers=max(layers) + 1,
        num_heads=max(int(width) // HEAD_WIDTH, 1),
        max_positions=int(np.shape(t["embeddings.position_embedding.weight"])[0]),
        hidden_act="quick_gelu",
    )


def _with_pad(tokenizer: ClipTokenizer, pad_token: str) -> ClipTokenizer:
    """The same tokenizer padding with `pad_token`; bos/eos/unk keep whether they are
    normalised. The former pad token stops being special (v1's "!" is a plain word again)."""
    norm = tokenizer._normalized  # noqa: SLF001 (a tokenizer's special-token flags)

    def special(text: str) -> dict[str, Any]:
        return {"content": text, "normalized": norm.get(text, False)}

    return ClipTokenizer(
        tokenizer.vocab,
        tokenizer.merges,
        tokenizer.max_length,
        bos_token=special(tokenizer.bos_token),
        eos_token=special(tokenizer.eos_token),
        unk_token=special(tokenizer.unk_token),
        pad_token=special(pad_token),
    )


def _check_tokenizer_dir(directory: str) -> None:
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"--tokenizer {directory}: no such folder; give a CLIP tokenizer folder (vocab.json, "
            "merges.txt), e.g. a diffusers Stable Diffusion pipeline's tokenizer/."
        )


def load_tokenizer(directory: str, version: str, max_length: int | None = None) -> ClipTokenizer:
    """The CLIP tokenizer of `directory`, padding as the original embedder pads.

    v1's `FrozenCLIPEmbedder` pads with `<|endoftext|>` (the tokenizer's eos); v2's
    `FrozenOpenCLIPEmbedder` (open_clip's tokenizer) with id 0, CLIP's "!". A folder that pads
    otherwise (a v1 `tokenizer/` for a v2 file, or the reverse) is used with that pad token.

    Raises:
      FileNotFoundError: no such folder, or no vocab.json / merges.txt in it (one line).
      UnsupportedConfigError: v2 and no token with id 0 in the vocabulary.
    """
    _check_tokenizer_dir(directory)
    tokenizer = ClipTokenizer.from_dir(directory, max_length=max_length)
    if version == "v1":
        pad = tokenizer.eos_token
    else:
        pad = next((t for t, i in tokenizer.vocab.items() if i == 0), None)
        if pad is None:
            raise UnsupportedConfigError(
                f"--tokenizer {directory}: no token has id 0, the pad id of SD 2's OpenCLIP "
                "tokenizer; give CLIP's vocabulary (a Stable Diffusion tokenizer/ folder)."
            )
    if tokenizer.pad_token == pad:
        return tokenizer
    logging.info(
        "Tokenizer %s pads with %r; SD %s pads with %r (id %d): using that.",
        directory,
        tokenizer.pad_token,
        version,
        pad,
        tokenizer.vocab[pad],
    )
    return _with_pad(tokenizer, pad)


def _text_encoder(
    tensors: dict[str, Any], kind: SingleFileKind, tokenizer: ClipTokenizer, ckpt_path: str
) -> tuple[ClipTextConfig, Any]:
    """(config, params) of the file's text tower; its special ids are the tokenizer's."""
    prefix = kind.text_prefix
    if kind.version == "v1":
        config = _clip_config_from_hf(tensors, prefix)
    else:
        config = clip_weights.config_from_openclip_state_dict(tensors, prefix)
    config = dataclasses.replace(
        config,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
    )
    top = max(tokenizer.vocab.values())
    if top >= config.vocab_size:
        raise WeightMismatchError(
            f"The tokenizer has token ids up to {top}; the text encoder of {ckpt_path} has "
            f"{config.vocab_size} embeddings (is the tokenizer CLIP's?)."
        )
    if tokenizer.max_length > config.max_positions:
        raise WeightMismatchError(
            f"The tokenizer makes {tokenizer.max_length} ids per prompt; the text encoder of "
            f"{ckpt_path} has {config.max_positions} positions."
        )
    if kind.version == "v1":
        params = clip_weights.params_from_hf_state_dict(tensors, config, prefix)
    else:
        params = clip_weights.params_from_openclip_state_dict(tensors, config, prefix)
    return config, params


def _check_stray(tensors: dict[str, Any], kind: SingleFileKind, ckpt_path: str) -> None:
    """Refuses tensors that belong to no part the workdir holds (training buffers aside)."""
    known = ("model.", "model_ema.", "first_stage_model.", kind.text_prefix)
    stray = sorted(k for k in tensors if not k.startswith(known) and not _SCHEDULE_BUFFERS.match(k))
    if stray:
        raise WeightMismatchError(
            f"{ckpt_path}: unexpected tensors outside the U-Net, autoencoder and text encoder: "
            f"{stray[:20]}"
        )


@dataclasses.dataclass(frozen=True)
class _Architecture:
    """What the standard configs (or the original YAML) say the file holds."""

    unet: UNetModel
    first_stage: AutoencoderKL
    yaml_params: dict[str, Any] | None  # the YAML's model.params, when given
    max_length: int | None  # the embedder's max_length, when the YAML gives one


def standard_modules(version: str, in_channels: int) -> tuple[UNetModel, AutoencoderKL]:
    """The released models' U-Net (SD `version`, `in_channels` inputs) and autoencoder."""
    unet_params = dict(_VERSIONS[version][2], in_channels=in_channels)
    unet = ccfg.unet_from_yaml({"target": "openaimodel.UNetModel", "params": unet_params})
    first = ccfg.first_stage_from_yaml({"target": "autoencoder.AutoencoderKL", "params": _KL_F8})
    return unet, first


def _standard(kind: SingleFileKind) -> _Architecture:
    return _Architecture(*standard_modules(kind.version, kind.in_channels), None, None)


def _from_yaml(path: str, kind: SingleFileKind) -> _Architecture:
    """The modules of an original YAML, checked against what the tensors say."""
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    model = cfg.get("model") if isinstance(cfg, dict) else None
    target = str((model or {}).get("target", ""))
    if not target.endswith(_MODEL_TARGETS) or "params" not in model:
        raise UnsupportedConfigError(
            f"--config {path}: model.target {target!r} is not a Stable Diffusion LatentDiffusion "
            "(ldm.models.diffusion.ddpm.LatentDiffusion or LatentInpaintDiffusion, with params)."
        )
    params = model["params"]
    unet = ccfg.unet_from_yaml(params["unet_config"])
    first = ccfg.first_stage_from_yaml(params["first_stage_config"])
    if not isinstance(first, AutoencoderKL):
        raise UnsupportedConfigError(
            f"--config {path}: Stable Diffusion's first stage is an AutoencoderKL."
        )
    cond = params.get("cond_stage_config", "")
    cond_target = ccfg._target(cond)
    cond_params = dict(cond.get("params") or {}) if isinstance(cond, dict) else {}
    want = _VERSIONS[kind.version][3]
    if not cond_target.endswith(want):
        raise UnsupportedConfigError(
            f"--config {path}: cond_stage_config target {cond_target!r}, but the checkpoint "
            f"holds an SD {kind.version} text encoder ({want})."
        )
    layer = cond_params.get("layer", _LAYERS[kind.version])
    if layer != _LAYERS[kind.version]:
        raise UnsupportedConfigError(
            f"--config {path}: {want} layer={layer!r}; an SD {kind.version} workdir takes the "
            f"{_LAYERS[kind.version]} layer."
        )
    key = params.get("conditioning_key", "crossattn")
    expected = "hybrid" if kind.inpainting else "crossattn"
    if key != expected:
        raise UnsupportedConfigError(
            f"--config {path}: conditioning_key={key!r}, but a U-Net with {kind.in_channels} "
            f"input channels is {expected!r}."
        )
    max_length = cond_params.get("max_length")
    return _Architecture(unet, first, params, None if max_length is None else int(max_length))


def prediction_type_of(
    kind: SingleFileKind, flag: str | None, yaml_params: dict | None, ckpt_path: str
) -> str:
    """The U-Net's prediction type: --prediction_type, else the YAML's `parameterization`, else
    epsilon for v1.

    Raises:
      UnsupportedConfigError: v2 with neither; a flag and YAML that disagree; x0 prediction.
    """
    from_yaml = None
    if yaml_params is not None:
        param = yaml_params.get("parameterization", "eps")
        if param not in _PARAMETERIZATION:
            raise UnsupportedConfigError(f"--config: parameterization={param!r} is not supported.")
        from_yaml = _PARAMETERIZATION[param]
    if flag is not None and flag not in PREDICTION_TYPES:
        raise UnsupportedConfigError(f"prediction_type={flag!r}: use one of {PREDICTION_TYPES}.")
    if flag is not None and from_yaml is not None and flag != from_yaml:
        raise UnsupportedConfigError(
            f"--prediction_type {flag} contradicts the YAML's parameterization "
            f"({from_yaml}); give one of them."
        )
    chosen = flag or from_yaml
    if chosen is None and kind.version == "v2":
        raise UnsupportedConfigError(_NEEDS_PREDICTION_TYPE.format(ckpt=ckpt_path))
    return chosen or "epsilon"


def _schedule(tensors: dict[str, Any], yaml_params: dict | None, ckpt_path: str) -> dict:
    """(beta_start, beta_end, steps) of the scaled_linear schedule, checked against `betas`."""
    p = yaml_params or {}
    kind = p.get("beta_schedule", "linear")
    if kind != "linear":  # the reference's "linear" is linear in sqrt(beta): scaled_linear
        raise UnsupportedConfigError(f"--config: beta_schedule={kind!r} is not supported.")
    start = float(p.get("linear_start", LINEAR_START))
    end = float(p.get("linear_end", LINEAR_END))
    steps = int(p.get("timesteps", TIMESTEPS))
    if "betas" in tensors:
        stored = np.asarray(tensors["betas"], np.float64)
        want = np.asarray(diffusion.NoiseSchedule.create("scaled_linear", steps, start, end).betas)
        if stored.shape != np.shape(want) or not np.allclose(stored, want, rtol=1e-5, atol=0):
            raise UnsupportedConfigError(
                f"{ckpt_path}: its betas ({stored.shape[0]} steps, {stored[0]:.6g} to "
                f"{stored[-1]:.6g}) are not the scaled_linear schedule {start} to {end} over "
                f"{steps} steps; pass the model's original YAML with --config."
            )
    return dict(beta_start=start, beta_end=end, num_train_timesteps=steps)


def _first_stage_params(first: AutoencoderKL, tensors: dict[str, Any], ckpt_path: str) -> Any:
    f = first.downsample_factor
    return assemble(
        abstract_params(first, np.zeros((1, f, f, first.in_channels), np.float32)),
        {
            k[len("first_stage_model.") :]: v
            for k, v in tensors.items()
            if k.startswith("first_stage_model.")
        },
        flax_path_to_compvis,
        ignore=lambda k: k.startswith("loss."),
        source=f"first stage (first_stage_model.*) of {ckpt_path}",
    )


def _standard_fit(error: WeightMismatchError, kind: SingleFileKind) -> Exception:
    first, _, rest = str(error).partition("\n")
    return WeightMismatchError(
        f"The checkpoint does not fit the standard SD {kind.version} architecture (pass the "
        f"model's original YAML with --config for a non-standard model): {first}\n{rest}".rstrip()
    )


def load_sd_single_file(
    ckpt_path: str,
    tokenizer_dir: str,
    prediction_type: str | None = None,
    use_ema: bool = True,
    allow_placeholders: bool = False,
    config_yaml: str | None = None,
) -> tuple[StableDiffusionParts, str]:
    """Loads an original Stable Diffusion 1.x/2.x single file (float32).

    Args:
      ckpt_path: the `.safetensors`, or the `.ckpt` (read by the restricted unpickler).
      tokenizer_dir: a CLIP tokenizer folder (vocab.json, merges.txt); see `load_tokenizer`.
      prediction_type: "epsilon" or "v_prediction"; needed for v2 unless the YAML says it.
      use_ema: take the U-Net from `model_ema.*` when the file has it.
      allow_placeholders: read `.ckpt` files that pickle Lightning extras (kept inert).
      config_yaml: the model's original YAML; default the standard SD architecture.

    Returns:
      (the pipeline parts, the cond kind "frozen_clip" (v1) or "frozen_openclip" (v2)) for
      `workdir.sd_writer.write_sd_workdir`.

    Raises:
      FileNotFoundError: a missing checkpoint, YAML or tokenizer folder.
      UnsupportedConfigError: SDXL, another model, or what the workdir cannot express (named).
      WeightMismatchError: tensors that do not fit the architecture, by name.
      UnsafeCheckpointError: a `.ckpt` whose pickle references a global outside the allow-list.
    """
    for flag, path in (("--ckpt", ckpt_path), ("--config", config_yaml)):
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"{flag} {path}: no such file.")
    _check_tokenizer_dir(tokenizer_dir)
    tensors = _read_tensors(ckpt_path, allow_placeholders)
    kind = detect(tensors, ckpt_path)
    arch = _standard(kind) if config_yaml is None else _from_yaml(config_yaml, kind)
    prediction = prediction_type_of(kind, prediction_type, arch.yaml_params, ckpt_path)
    schedule = _schedule(tensors, arch.yaml_params, ckpt_path)
    _check_stray(tensors, kind, ckpt_path)
    unet, first = arch.unet, arch.first_stage
    try:
        unet_params = _unet_params(unet, kind.in_channels, tensors, use_ema, ckpt_path)
        vae_params = _first_stage_params(first, tensors, ckpt_path)
    except WeightMismatchError as e:
        if arch.yaml_params is not None:
            raise
        raise _standard_fit(e, kind) from e
    tokenizer = load_tokenizer(tokenizer_dir, kind.version, arch.max_length)
    text_config, text_params = _text_encoder(tensors, kind, tokenizer, ckpt_path)
    if unet.context_dim != text_config.hidden_size:
        raise WeightMismatchError(
            f"{ckpt_path}: the U-Net cross-attends to {unet.context_dim}-wide tokens but the text "
            f"encoder gives {text_config.hidden_size}-wide ones (a YAML's unet_config context_dim "
            "must be the text encoder's width)."
        )

    p = arch.yaml_params or {}
    v_768 = kind.version == "v2" and prediction == "v_prediction"
    sample_size = int(p.get("image_size", 96 if v_768 else 64))
    scale = tensors.get("scale_factor", p.get("scale_factor", SCALE_FACTOR))
    scheduler_config = dict(
        _class_name="DDIMScheduler",
        beta_schedule="scaled_linear",
        **schedule,
        prediction_type=prediction,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )
    unet_config = dict(
        _class_name="UNet2DConditionModel",
        in_channels=kind.in_channels,
        out_channels=unet.out_channels,
        sample_size=sample_size,
        cross_attention_dim=unet.context_dim,
    )
    vae_config = dict(
        _class_name="AutoencoderKL",
        latent_channels=first.embed_dim,
        sample_size=sample_size * first.downsample_factor,
        scaling_factor=float(np.asarray(scale, np.float64)),
    )
    pipeline = "StableDiffusionInpaintPipeline" if kind.inpainting else "StableDiffusionPipeline"
    parts = StableDiffusionParts(
        unet=unet,
        unet_params=unet_params,
        unet_config=unet_config,
        vae=first,
        vae_params=vae_params,
        vae_config=vae_config,
        text_config=text_config,
        text_params=text_params,
        tokenizer=tokenizer,
        scheduler_config=scheduler_config,
        pipeline=pipeline,
    )
    return parts, kind.cond_kind
