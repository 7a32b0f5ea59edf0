"""Writes imported weights as a training workdir that `ldm_jax.sample`/`ldm_jax.train` read.

A workdir is `config.json` (the quickstart config schema) plus orbax `checkpoints/autoencoder`
(a stage-1 TrainState) and `checkpoints/ldm` (a stage-2 TrainState whose EMA params are the
imported U-Net + tau_theta, meta `scale_factor`). The workdir format covers a KL first stage and a
U-Net that is unconditional or cross-attends to a class token (`ClassEmbedder`); other imports
raise `UnsupportedConfigError` saying what the format lacks.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from ldm_jax.config_files import load_config_file
from ldm_jax.interop.compvis import CompVisLDM
from ldm_jax.interop.diffusers_config import UnsupportedConfigError
from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.training import builders, train_autoencoder, train_ldm
from ldm_jax.training.checkpoint import Checkpointer
from ldm_jax.training.state import create_state, make_optimizer

_IGNORED_FIELDS = ("parent", "name", "dtype", "legacy")


def _template() -> ml_collections.ConfigDict:
    """The quickstart config (the workdir schema), loaded from the repository's configs/."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "quickstart.py")
    return load_config_file(path)


def _same_module(want: Any, got: Any, what: str) -> None:
    diffs = [
        f"{f.name}: workdir format gives {getattr(want, f.name)!r}, checkpoint has "
        f"{getattr(got, f.name)!r}"
        for f in dataclasses.fields(want)
        if f.name not in _IGNORED_FIELDS and getattr(want, f.name) != getattr(got, f.name)
    ]
    if diffs:
        raise UnsupportedConfigError(
            f"The workdir format cannot express this {what}:\n  " + "\n  ".join(diffs)
        )


def autoencoder_config(config: ml_collections.ConfigDict, ae: AutoencoderKL) -> None:
    """Fills `config.autoencoder`/`config.data` from an imported KL autoencoder."""
    if not isinstance(ae, AutoencoderKL):
        raise UnsupportedConfigError(
            f"The workdir format holds a KL autoencoder; got {type(ae).__name__}."
        )
    if ae.in_channels != ae.out_ch:
        raise UnsupportedConfigError("The workdir format needs in_channels == out_ch.")
    config.data.channels = ae.in_channels
    config.data.image_size = ae.resolution
    config.autoencoder.update(
        ch=ae.ch,
        ch_mult=tuple(ae.ch_mult),
        num_res_blocks=ae.num_res_blocks,
        z_channels=ae.z_channels,
        embed_dim=ae.embed_dim,
        attn_resolutions=tuple(ae.attn_resolutions),
        dropout=ae.dropout,
        num_groups=ae.num_groups,
    )
    _same_module(builders.build_autoencoder(config), ae, "autoencoder")


def write_autoencoder(workdir: str, config: ml_collections.ConfigDict, params: Any) -> None:
    """Saves stage-1 params as the workdir's autoencoder checkpoint."""
    t = config.autoencoder_train
    tx = make_optimizer(t.learning_rate, t.warmup_steps, t.weight_decay, t.grad_clip)
    state = create_state(params, tx, jax.random.PRNGKey(0), use_ema=False)
    state = state.replace(step=state.step + t.steps)  # a finished stage 1
    ckpt = Checkpointer(train_autoencoder.checkpoint_dir(workdir), t.keep_checkpoints)
    ckpt.save(t.steps, state, {"data": {}, "imported": True})
    ckpt.close()


def _write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json(indent=2))


def write_compvis_workdir(ldm: CompVisLDM, workdir: str) -> ml_collections.ConfigDict:
    """Writes a loaded paper checkpoint as a workdir; returns its config."""
    config = _template()
    autoencoder_config(config, ldm.first_stage)
    u = ldm.unet
    if ldm.conditioning_key not in (None, "crossattn") or u.num_classes is not None:
        raise UnsupportedConfigError(
            f"The workdir format has no {ldm.conditioning_key!r} conditioning."
        )
    if ldm.cond_stage is not None and not hasattr(ldm.cond_stage, "num_classes"):
        raise UnsupportedConfigError(
            f"The workdir format has no {type(ldm.cond_stage).__name__} (text) conditioning."
        )
    class_conditional = ldm.cond_stage is not None
    if ldm.conditioning_key == "crossattn" and not class_conditional:
        raise UnsupportedConfigError(
            "Cross-attention without a class embedder is not in the format."
        )
    config.conditioning.kind = "class" if class_conditional else "none"
    if class_conditional:
        config.data.num_classes = ldm.cond_stage.num_classes
    config.unet.update(
        model_channels=u.model_channels,
        channel_mult=tuple(u.channel_mult),
        num_res_blocks=u.num_res_blocks,
        attention_resolutions=tuple(u.attention_resolutions),
        num_heads=u.num_heads,
        num_head_channels=u.num_head_channels,
        transformer_depth=u.transformer_depth,
        context_dim=u.context_dim or config.unet.context_dim,
        dropout=u.dropout,
        use_scale_shift_norm=u.use_scale_shift_norm,
        use_linear_in_transformer=u.use_linear_in_transformer,
        num_groups=u.num_groups,
    )
    denoiser = builders.build_denoiser(config)
    _same_module(denoiser.diffusion_model, u, "U-Net")
    if u.num_head_channels != -1 and any(
        (u.model_channels * m) % u.num_head_channels for m in u.channel_mult
    ):
        raise UnsupportedConfigError("Head widths differ between legacy conventions.")
    s = ldm.schedule
    config.diffusion.update(scale_by_std=False, scale_factor=ldm.scale_factor)
    config.diffusion.prediction_type = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}[
        ldm.parameterization
    ]
    _schedule_fields(config, ldm, np.asarray(s.betas))
    config.autoencoder_train.steps = 0
    config.train.steps = 0
    config.stage = "ldm"
    _write_config(workdir, config)
    write_autoencoder(workdir, config, ldm.first_stage_params)
    params = {"diffusion_model": ldm.unet_params}
    if class_conditional:
        params["cond_stage_model"] = ldm.cond_stage_params
    tx = train_ldm.optimizer(config)
    state = create_state(params, tx, jax.random.PRNGKey(0), use_ema=True)
    ckpt = Checkpointer(train_ldm.checkpoint_dir(workdir), config.train.keep_checkpoints)
    ckpt.save(0, state, {"data": {}, "scale_factor": ldm.scale_factor, "imported": True})
    ckpt.close()
    return config


def _schedule_fields(config: ml_collections.ConfigDict, ldm: CompVisLDM, betas: np.ndarray) -> None:
    """The paper's schedules as config fields (its "linear" is linear in sqrt(beta))."""
    p = ldm.config
    kind = {"linear": "scaled_linear", "cosine": "cosine", "sqrt_linear": "linear"}
    config.diffusion.schedule = kind[p.get("beta_schedule", "linear")]
    config.diffusion.num_timesteps = int(p.get("timesteps", len(betas)))
    config.diffusion.beta_start = float(p.get("linear_start", 1e-4))
    config.diffusion.beta_end = float(p.get("linear_end", 2e-2))
    rebuilt = builders.build_schedule(config).betas
    if len(rebuilt) != len(betas) or not np.allclose(rebuilt, betas, rtol=1e-4, atol=1e-7):
        raise UnsupportedConfigError("The checkpoint's betas differ from its config's schedule.")


def write_diffusers_autoencoder_workdir(ae: Any, params: Any, workdir: str) -> Any:
    """A stage-1-only workdir from a diffusers AutoencoderKL (train stage 2 on top of it)."""
    config = _template()
    autoencoder_config(config, ae)
    config.autoencoder_train.steps = 0
    config.stage = "ldm"
    _write_config(workdir, config)
    write_autoencoder(workdir, config, params)
    with open(os.path.join(workdir, "imported.json"), "w") as f:
        json.dump({"source": "diffusers", "stage": "autoencoder"}, f)
    return config
