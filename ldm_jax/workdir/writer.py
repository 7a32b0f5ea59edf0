"""Writes imported weights as a workdir that `python -m ldm_jax.sample` reads.

A full workdir (any model the paper schema describes: unconditional, class, text, concat-
conditioned; KL, VQ or identity first stage) is
  config.json                 `model` (the paper schema built by `models.factory`), `diffusion`
                              (every `config.schema.DiffusionConfig` field), `sample` defaults,
                              `data` (image size and channels) and `imported` (its source);
  checkpoints/autoencoder/0   orbax `state` {step, params} of the first stage (none for the
                              identity first stage, which has no parameters);
  checkpoints/ldm/0           orbax `state` {step, ema_params} of the denoiser (U-Net +
                              tau_theta, `LatentDenoiser` tree), `meta` {scale_factor};
  vocab.txt                   a text model's WordPiece vocabulary (`model.cond_stage.vocab`).
A stage-1-only workdir (`write_diffusers_autoencoder_workdir`) holds `model.first_stage` and the
lean `{step, params}`; an LDM run takes it with `--config.train.first_stage_workdir=<workdir>`.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ldm_jax.config import builders, schema
from ldm_jax.interop import compvis_config as ccfg
from ldm_jax.interop import model_spec
from ldm_jax.interop.compvis import CompVisLDM, unet_in_channels
from ldm_jax.interop.diffusers_config import UnsupportedConfigError
from ldm_jax.models import factory, specs
from ldm_jax.models.conditioning import SpatialRescaler
from ldm_jax.models.text_encoder import BERTEmbedder
from ldm_jax.models.unet import UNetModel
from ldm_jax.training.checkpoint import Checkpointer
from ldm_jax.workdir import layout
from ldm_jax.workdir.diffusers_scheduler import schedule_fields, scheduler_fields


def _write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    os.makedirs(workdir, exist_ok=True)
    with open(layout.config_path(workdir), "w") as f:
        f.write(config.to_json(indent=2))


def _sample_defaults(model: dict[str, Any]) -> dict[str, Any]:
    """DDIM, 50 steps, eta 0; guidance 7.5 for Stable Diffusion's CLIP (diffusers' default), 5
    for the paper's text model, 3 for classes with a null class, else 1."""
    cond = model["cond_stage"]
    guidance = 1.0
    if cond["kind"] in factory.EXTERNAL_COND_STAGES:
        guidance = 7.5
    elif cond["kind"] == "bert":
        guidance = 5.0
    elif cond["kind"] == "class" and cond.get("add_null_class"):
        guidance = 3.0
    return dict(sampler="ddim", steps=50, eta=0.0, guidance_scale=guidance, per_class=4)


def _image_side(model: dict[str, Any]) -> int:
    """The image side: the autoencoder's `resolution`, else (identity) the U-Net's side * f."""
    fs = model["first_stage"]
    return fs.get("resolution") or model["unet"]["image_size"] * specs.downsampling_factor(fs)


def write_workdir(
    workdir: str,
    model: dict[str, Any],
    first_stage_params: Any,
    denoiser_params: Any,
    scale_factor: float,
    diffusion_fields: dict[str, Any],
    source: dict[str, Any],
    vocab: str | None = None,
    sample_settings: dict[str, Any] | None = None,
) -> ml_collections.ConfigDict:
    """Writes a full sampleable workdir for a paper-schema model; returns its config.

    Args:
      workdir: the folder to create.
      model: `config.model` (first_stage, unet, cond_stage, conditioning_key).
      first_stage_params: the autoencoder's parameters.
      denoiser_params: the `LatentDenoiser` tree {"diffusion_model": ..., ["cond_stage_model"]}.
      scale_factor: the latent scale.
      diffusion_fields: schedule, num_timesteps, beta_start, beta_end, prediction_type; the
        other `config.schema.DiffusionConfig` fields take their defaults.
      source: provenance, stored as `config.imported`.
      vocab: a text model's WordPiece vocabulary, copied into the workdir.
      sample_settings: `config.sample` entries over the defaults (sampler, timestep_spacing,
        steps_offset of an imported scheduler).

    Raises:
      UnsupportedConfigError: the weights do not fit the networks `model` builds.
    """
    fs = model["first_stage"]
    cond = dict(model["cond_stage"])
    if cond["kind"] == "bert":
        if vocab is None:
            raise UnsupportedConfigError(
                "A text model's workdir needs its WordPiece vocabulary: pass --vocab vocab.txt "
                "(bert-base-uncased)."
            )
        cond["vocab"] = layout.VOCAB_FILE
    model = {**model, "cond_stage": cond}
    config = ml_collections.ConfigDict()
    config.stage = "ldm"
    config.seed = 0
    num_classes = cond.get("n_classes", 0) - int(bool(cond.get("add_null_class")))
    if model.get("conditioning_key") == "adm":
        num_classes = model["unet"]["num_classes"]
    config.data = dict(
        name="imported",
        data_dir="",
        train_split="train",
        image_size=_image_side(model),
        channels=fs.get("out_ch", fs.get("in_channels", 3)),
        num_classes=max(num_classes, 0),
    )
    config.model = model
    diffusion_section = dict(diffusion_fields, scale_factor=float(scale_factor))
    config.diffusion = schema.DiffusionConfig.from_dict(diffusion_section).to_dict()
    config.sample = dict(_sample_defaults(model), **(sample_settings or {}))
    config.imported = source
    _check_tree(
        config, "first stage", builders.abstract_autoencoder_params(config), first_stage_params
    )
    _check_tree(config, "denoiser", builders.abstract_denoiser_params(config), denoiser_params)
    _write_config(workdir, config)
    if vocab is not None:
        shutil.copyfile(vocab, layout.vocab_path(workdir))
    step = jnp.zeros((), jnp.int32)
    if fs["kind"] not in factory.PARAMETER_FREE_FIRST_STAGES:
        ae_ckpt = Checkpointer(layout.checkpoint_dir(workdir, "autoencoder"), 1)
        ae_ckpt.save(0, {"step": step, "params": first_stage_params}, {"imported": True})
        ae_ckpt.close()
    ckpt = Checkpointer(layout.checkpoint_dir(workdir, "ldm"), 1)
    meta = {"scale_factor": float(scale_factor), "imported": True}
    ckpt.save(0, {"step": step, "ema_params": denoiser_params}, meta)
    ckpt.close()
    return config


def _check_tree(config: Any, what: str, abstract: Any, params: Any) -> None:
    shapes = lambda tree: jax.tree_util.tree_map(lambda x: tuple(np.shape(x)), tree)
    if shapes(abstract) != shapes(params):
        raise UnsupportedConfigError(
            f"The imported {what} weights do not fit the networks of the workdir config."
        )


def compvis_model_spec(ldm: CompVisLDM) -> dict[str, Any]:
    """`config.model` for a loaded paper checkpoint."""
    p = ldm.config
    unet_yaml = p["unet_config"].get("params", {})
    side = int(unet_yaml.get("image_size", p.get("image_size", 32)))
    in_ch = unet_in_channels(p, ldm.first_stage)
    cond_cfg = p.get("cond_stage_config", "__is_unconditional__")
    target = ccfg._target(cond_cfg)
    extra: dict[str, Any] = {}
    if isinstance(ldm.cond_stage, SpatialRescaler):
        extra["in_channels"] = int(cond_cfg.get("params", {}).get("in_channels", 3))
    if target == "__is_first_stage__":
        without = "first_stage"
    elif target.endswith("Identity"):
        without = "identity"
    else:
        without = "none"
    return dict(
        first_stage=first_stage_spec(ldm.first_stage),
        unet=model_spec.unet_spec(ldm.unet, side, in_ch),
        cond_stage=model_spec.cond_stage_spec(ldm.cond_stage, without, **extra),
        conditioning_key=ldm.conditioning_key,
    )


def write_compvis_workdir(
    ldm: CompVisLDM, workdir: str, vocab: str | None = None
) -> ml_collections.ConfigDict:
    """Writes a loaded paper checkpoint as a workdir; returns its config.

    Args:
      ldm: from `load_compvis`.
      workdir: the folder to create.
      vocab: the WordPiece vocabulary of a text model (copied into the workdir).
    """
    model = compvis_model_spec(ldm)
    if model["cond_stage"]["kind"] == "none" and ldm.conditioning_key not in (None, "adm"):
        raise UnsupportedConfigError(
            f"conditioning_key={ldm.conditioning_key!r} without a condition encoder is not a "
            "workdir model (feed precomputed conditions through ldm_jax.interop.load_compvis)."
        )
    p = ldm.config
    kind = {"linear": "scaled_linear", "cosine": "cosine", "sqrt_linear": "linear"}
    beta_schedule = p.get("beta_schedule", "linear")
    if beta_schedule not in kind:
        raise UnsupportedConfigError(f"beta_schedule={beta_schedule!r} is not supported.")
    betas = np.asarray(ldm.schedule.betas)
    fields = schedule_fields(
        kind[beta_schedule],
        int(p.get("timesteps", len(betas))),
        float(p.get("linear_start", 1e-4)),
        float(p.get("linear_end", 2e-2)),
        betas,
    )
    fields["prediction_type"] = schema.PREDICTION_TYPE_OF_PARAMETERIZATION[ldm.parameterization]
    params = {"diffusion_model": ldm.unet_params}
    if ldm.cond_stage_params:
        params["cond_stage_model"] = ldm.cond_stage_params
    return write_workdir(
        workdir,
        model,
        ldm.first_stage_params,
        params,
        ldm.scale_factor,
        fields,
        {"source": "compvis"},
        vocab=vocab if isinstance(ldm.cond_stage, BERTEmbedder) else None,
    )


def first_stage_spec(ae: factory.FirstStage) -> dict[str, Any]:
    """`config.model.first_stage` of a first-stage module (`model_spec.first_stage_spec` for
    the imported autoencoders; the identity's section has no weights to check)."""
    if factory.first_stage_kind_of(ae) in factory.PARAMETER_FREE_FIRST_STAGES:
        return specs.IdentityConfig.from_module(ae).to_dict()
    return model_spec.first_stage_spec(ae)


def write_diffusers_workdir(
    unet: UNetModel,
    unet_params: Any,
    unet_config: dict[str, Any],
    ae: factory.FirstStage,
    ae_params: Any,
    vae_config: dict[str, Any],
    workdir: str,
    scheduler_config: dict[str, Any] | None = None,
) -> ml_collections.ConfigDict:
    """Writes a diffusers UNet2DModel + AutoencoderKL/VQModel pair as a workdir.

    A pixel-space UNet2DModel (no VAE) is written with `ae = IdentityFirstStage(channels)`,
    `ae_params = {}` and `vae_config = {}` (scale factor 1).

    The U-Net's input channels decide the task: the latent channels (unconditional, or class
    labels through `num_class_embeds`), or latent + image channels (super-resolution: the
    low-resolution image is stacked on z_t, as diffusers' `LDMSuperResolutionPipeline`).
    Without a scheduler config the paper's LDM schedule is used (scaled_linear, 0.0015 to
    0.0195, 1000 steps, epsilon prediction), as diffusers' CompVis LDM pipelines.
    """
    latent = ae.embed_dim
    in_ch = int(unet_config.get("in_channels", latent))
    if unet.out_channels != latent:
        raise UnsupportedConfigError(
            f"The U-Net predicts {unet.out_channels} channels but the autoencoder's latents "
            f"have {latent}."
        )
    if in_ch == latent:
        key = "adm" if unet.num_classes is not None else None
        cond = model_spec.cond_stage_spec(None, "none")
    elif in_ch == latent + ae.in_channels and unet.num_classes is None:
        key, cond = "concat", {"kind": "identity"}
    else:
        raise UnsupportedConfigError(
            f"A U-Net with {in_ch} input channels on {latent}-channel latents is neither "
            f"unconditional ({latent}) nor image-concat super-resolution "
            f"({latent + ae.in_channels}); the workdir cannot tell what the extra channels are."
        )
    side = unet_config.get("sample_size", 32)
    side = side[0] if isinstance(side, (list, tuple)) else side
    model = dict(
        first_stage=first_stage_spec(ae),
        unet=model_spec.unet_spec(unet, int(side), in_ch),
        cond_stage=cond,
        conditioning_key=key,
    )
    fields = scheduler_fields(scheduler_config)
    scale = float(vae_config.get("scaling_factor", 1.0))
    return write_workdir(
        workdir,
        model,
        ae_params,
        {"diffusion_model": unet_params},
        scale,
        fields,
        {"source": "diffusers"},
    )


def write_diffusers_autoencoder_workdir(ae: Any, params: Any, workdir: str) -> Any:
    """A stage-1-only workdir from a diffusers AutoencoderKL or VQModel.

    It holds `config.model.first_stage` (paper schema) and a lean `{step, params}` checkpoint;
    stage 2 trains on it with `--config.train.first_stage_workdir=<workdir>`.
    """
    model = {"first_stage": model_spec.first_stage_spec(ae)}
    config = ml_collections.ConfigDict()
    config.stage = "autoencoder"
    config.model = model
    config.data = dict(
        name="imported",
        image_size=int(ae.resolution),
        channels=int(ae.out_ch),
    )
    config.imported = {"source": "diffusers", "stage": "autoencoder"}
    _check_tree(config, "first stage", builders.abstract_autoencoder_params(config), params)
    _write_config(workdir, config)
    ckpt = Checkpointer(layout.checkpoint_dir(workdir, "autoencoder"), 1)
    ckpt.save(0, {"step": jnp.zeros((), jnp.int32), "params": params}, {"imported": True})
    ckpt.close()
    return config
