"""Loads the paper's released checkpoints: a LatentDiffusion `.ckpt` plus its YAML config.

    ldm = load_compvis("cin256-v2.yaml", "model.ckpt")
    eps = ldm.eps(z, t, labels)                 # NHWC throughout
    ldm = load_compvis("txt2img-1p4B-eval.yaml", "model.ckpt", vocab="vocab.txt")
    eps = ldm.eps(z, t, ldm.tokenize(["a painting of a fox"]))  # or token ids, or context
    z = ldm.encode(x); x = ldm.decode(z)        # z already multiplied by ldm.scale_factor

The state dict holds `model.diffusion_model.*` (the U-Net), `first_stage_model.*`,
`cond_stage_model.*` and, when trained with EMA, `model_ema.*` whose names are the U-Net's with the
dots removed (the reference `LitEma`); EMA weights are used when present. A text model's
`cond_stage_model.transformer.*` (the reference x-transformers `TransformerWrapper`) loads into
our `BERTEmbedder`; the WordPiece tokenizer holds no weights and needs the `vocab.txt` of
bert-base-uncased. The `.ckpt` is read with the restricted unpickler of `torch_pickle` (no
PyTorch, no code from the file is run).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax import diffusion
from ldm_jax.interop import compvis_config as ccfg
from ldm_jax.interop.safetensors_file import read_safetensors
from ldm_jax.interop.tensors import (
    WeightMismatchError,
    abstract_params,
    assemble,
    flax_path_to_compvis,
    flax_path_to_xtransformers,
)
from ldm_jax.interop.torch_pickle import load_state_dict
from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.models.conditioning import ClassEmbedder, SpatialRescaler
from ldm_jax.models.text_encoder import BERTEmbedder
from ldm_jax.models.tokenizer import WordPieceTokenizer
from ldm_jax.models.unet import UNetModel
from ldm_jax.models.vq_autoencoder import VQModel

# Buffers of the reference LatentDiffusion that are not network weights.
_SCHEDULE_BUFFERS = re.compile(
    r"^(betas|alphas_cumprod(_prev)?|sqrt_alphas_cumprod|sqrt_one_minus_alphas_cumprod|"
    r"log_one_minus_alphas_cumprod|sqrt_recip(m1)?_alphas_cumprod|posterior_\w+|lvlb_weights|"
    r"logvar|scale_factor|model_ema\.(decay|num_updates))$"
)


@dataclasses.dataclass(frozen=True)
class CompVisLDM:
    """A loaded latent diffusion model (NHWC).

    Attributes:
      unet / unet_params: eps_theta (EMA weights when the checkpoint has them).
      first_stage / first_stage_params: the autoencoder (KL or VQ).
      cond_stage / cond_stage_params: tau_theta (`ClassEmbedder`, `BERTEmbedder`,
        `SpatialRescaler`) or None.
      conditioning_key: None, "crossattn", "concat", "hybrid" or "adm".
      scale_factor: z fed to the diffusion is scale_factor * E(x).
      schedule: the training noise schedule (from the checkpoint's `betas` when stored).
      parameterization: "eps", "x0" or "v" (eps() converts to eps).
      config: the YAML's `model.params`.
      tokenizer: the WordPiece tokenizer of a text model (when a vocabulary was given).
    """

    unet: UNetModel
    unet_params: Any
    first_stage: AutoencoderKL | VQModel
    first_stage_params: Any
    cond_stage: ClassEmbedder | BERTEmbedder | SpatialRescaler | None
    cond_stage_params: Any
    conditioning_key: str | None
    scale_factor: float
    schedule: diffusion.NoiseSchedule
    parameterization: str
    config: dict
    tokenizer: WordPieceTokenizer | None = None

    def tokenize(self, texts: str | list[str]) -> np.ndarray:
        """Captions -> token ids [B, max_seq_len] (the reference `BERTTokenizer`)."""
        if self.tokenizer is None:
            raise ValueError(
                "No tokenizer: pass vocab='vocab.txt' (bert-base-uncased) to load_compvis, or "
                "feed token ids."
            )
        return self.tokenizer(texts)

    def condition(self, cond: Any) -> Any:
        """tau_theta(y) -> context tokens [B, L, D].

        A class embedder takes labels [B]. A text embedder takes captions (str or a list of str;
        needs the tokenizer), token ids [B, L] (int), or passes through precomputed context
        [B, L, D] (float). Without a tau_theta, `cond` is returned as given.
        """
        if self.cond_stage is None or cond is None:
            return cond
        if isinstance(self.cond_stage, BERTEmbedder):
            if isinstance(cond, str) or (
                isinstance(cond, (list, tuple)) and cond and isinstance(cond[0], str)
            ):
                cond = self.tokenize(list(cond) if not isinstance(cond, str) else cond)
            cond = jnp.asarray(cond)
            if jnp.issubdtype(cond.dtype, jnp.floating):
                if cond.ndim != 3:
                    raise ValueError(f"Context must be [B, L, D]; got shape {cond.shape}.")
                return cond
        return self.cond_stage.apply({"params": self.cond_stage_params}, jnp.asarray(cond))

    def eps(self, z: jax.Array, t: jax.Array, cond: Any = None) -> jax.Array:
        """Noise prediction eps_theta(z_t, t, c).

        Args:
          z: [B, h, w, c] noisy scaled latents.
          t: [B] int timesteps.
          cond: by `conditioning_key`: None; labels [B] (class embedder) or context tokens
            [B, L, D] for "crossattn"; channels [B, h, w, c'] for "concat"; labels/vector for
            "adm"; a dict {"c_concat": ..., "c_crossattn": ...} for "hybrid".

        Returns:
          [B, h, w, c] float32 eps (converted from v or x0 predictions when needed).
        """
        key, x, context, y = self.conditioning_key, z, None, None
        if key == "crossattn":
            context = self.condition(cond)
        elif key == "concat":  # through tau_theta when there is one (spatial rescaler)
            x = jnp.concatenate([z, jnp.asarray(self.condition(cond), z.dtype)], axis=-1)
        elif key == "hybrid":
            x = jnp.concatenate([z, jnp.asarray(cond["c_concat"], z.dtype)], axis=-1)
            context = self.condition(cond["c_crossattn"])
        elif key == "adm":
            y = jnp.asarray(cond)
        out = self.unet.apply({"params": self.unet_params}, x, t, context, y=y)
        if self.parameterization == "eps":
            return out
        sa = jnp.asarray(self.schedule.sqrt_alphas_cumprod)[t][:, None, None, None]
        s1 = jnp.asarray(self.schedule.sqrt_one_minus_alphas_cumprod)[t][:, None, None, None]
        if self.parameterization == "v":
            return sa * out + s1 * z
        return (z - sa * out) / s1  # x0-prediction

    def encode(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Images [B, H, W, C] in [-1, 1] -> scaled latents scale_factor * z.

        KL: the posterior mean (or a sample when `rng` is given); VQ: the pre-quantisation latent.
        """
        fs, p = self.first_stage, {"params": self.first_stage_params}
        if isinstance(fs, VQModel):
            z = fs.apply(p, x, method=fs.encode_to_prequant)
        else:
            post = fs.apply(p, x, method=fs.encode)
            z = post.mean if rng is None else post.sample(rng)
        return self.scale_factor * z

    def decode(self, z: jax.Array) -> jax.Array:
        """Scaled latents -> images [B, H, W, C] (VQ latents are quantised first)."""
        fs, p = self.first_stage, {"params": self.first_stage_params}
        z = z / self.scale_factor
        if isinstance(fs, VQModel):
            return fs.apply(p, z, method=fs.decode_latent)
        return fs.apply(p, z, method=fs.decode)


def _yaml(path: str) -> dict:
    import yaml

    with open(path) as f:
        cfg = yaml.safe_load(f)
    if "model" not in cfg or "params" not in cfg["model"]:
        raise ccfg.UnsupportedConfigError(
            f"{path}: not a LatentDiffusion config (it has no model.params). Pass the YAML the "
            "checkpoint was released with (CompVis/latent-diffusion's configs/latent-diffusion/ "
            "or models/ldm/<name>/config.yaml)."
        )
    return cfg["model"]["params"]


def _ema_view(tensors: dict[str, np.ndarray], use_ema: bool) -> dict[str, np.ndarray]:
    """`model.diffusion_model.*` replaced by the EMA copies (`model_ema.<name without dots>`)."""
    ema = {k[len("model_ema.") :]: v for k, v in tensors.items() if k.startswith("model_ema.")}
    ema = {k: v for k, v in ema.items() if k not in ("decay", "num_updates")}
    if not use_ema or not ema:
        return {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    out, seen = {}, {}
    for k in tensors:
        if not k.startswith("model."):
            continue
        name = k[len("model.") :]
        stripped = name.replace(".", "")
        if stripped in seen:
            raise WeightMismatchError(f"EMA names of {seen[stripped]!r} and {name!r} collide.")
        seen[stripped] = name
        if stripped not in ema:
            raise WeightMismatchError(f"EMA tensor 'model_ema.{stripped}' (for {k}) is missing.")
        out[name] = ema.pop(stripped)
    if ema:
        raise WeightMismatchError(f"unexpected EMA tensors: {sorted(ema)[:20]}")
    return out


def _part(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_compvis(
    config_yaml: str,
    ckpt_path: str,
    use_ema: bool = True,
    ignore_cond_stage: bool = False,
    allow_placeholders: bool = False,
    vocab: str | None = None,
) -> CompVisLDM:
    """Loads a released LatentDiffusion checkpoint (`.ckpt`, or `.safetensors`) and its config.

    Args:
      config_yaml: the model's YAML (`model.target: ...LatentDiffusion`).
      ckpt_path: the checkpoint (torch.save zip, read without PyTorch) or a safetensors file.
      use_ema: take the U-Net from `model_ema.*` when the checkpoint has EMA weights.
      ignore_cond_stage: skip an unsupported tau_theta (eps() then takes context tokens).
      allow_placeholders: see `torch_pickle.load_torch_file` (for Lightning checkpoints that
        pickle callbacks); nothing from the file is executed either way.
      vocab: a WordPiece `vocab.txt` (bert-base-uncased) for a text model's tokenizer; without it
        the text model takes token ids.

    Raises:
      UnsupportedConfigError: an architecture ldm_jax cannot express.
      WeightMismatchError: missing, unexpected or mis-shaped tensors, by name.
      UnsafeCheckpointError: the pickle references a global outside the allow-list.
    """
    params = _yaml(config_yaml)
    tensors = _read_tensors(ckpt_path, allow_placeholders)
    unet = ccfg.unet_from_yaml(params["unet_config"])
    first = ccfg.first_stage_from_yaml(params["first_stage_config"])
    cond_cfg = params.get("cond_stage_config", "__is_unconditional__")
    cond = None if ignore_cond_stage else ccfg.cond_stage_from_yaml(cond_cfg, unet)
    key = params.get("conditioning_key")
    if key not in (None, "crossattn", "concat", "hybrid", "adm"):
        raise ccfg.UnsupportedConfigError(f"conditioning_key={key!r} is not supported.")

    unet_params = _unet_params(unet, unet_in_channels(params, first), tensors, use_ema, ckpt_path)
    f = first.downsample_factor
    fs_params = assemble(
        abstract_params(first, jnp.zeros((1, f, f, first.in_channels))),
        _part(tensors, "first_stage_model."),
        flax_path_to_compvis,
        ignore=lambda k: k.startswith("loss."),
        source=f"first stage (first_stage_model.*) of {ckpt_path}",
    )
    cond_params, tokenizer = _cond_stage_params(cond, cond_cfg, tensors, ckpt_path, vocab)
    _check_no_stray(tensors, cond, cond_cfg, ignore_cond_stage, ckpt_path)
    if "betas" in tensors:
        schedule = diffusion.NoiseSchedule.from_betas(np.asarray(tensors["betas"], np.float64))
    else:
        schedule = _schedule_from_config(params)
    scale = tensors.get("scale_factor", params.get("scale_factor", 1.0))
    return CompVisLDM(
        unet=unet,
        unet_params=unet_params,
        first_stage=first,
        first_stage_params=fs_params,
        cond_stage=cond,
        cond_stage_params=cond_params,
        conditioning_key=key,
        scale_factor=float(np.asarray(scale, np.float64)),
        schedule=schedule,
        parameterization=params.get("parameterization", "eps"),
        config=params,
        tokenizer=tokenizer,
    )


def _read_tensors(ckpt_path: str, allow_placeholders: bool) -> dict[str, np.ndarray]:
    """Every tensor of a `.ckpt` (restricted unpickler) or `.safetensors` file."""
    if ckpt_path.endswith(".safetensors"):
        return read_safetensors(ckpt_path)
    return load_state_dict(ckpt_path, allow_placeholders)


def _unet_params(unet: UNetModel, in_ch: int, tensors: dict, use_ema: bool, ckpt_path: str):
    """The U-Net's parameters from `model.diffusion_model.*` (or their EMA copies)."""
    side = 2 ** (len(unet.channel_mult) - 1)
    ctx = None if unet.context_dim is None else jnp.zeros((1, 1, unet.context_dim))
    y = None if unet.num_classes is None else jnp.zeros((1,), jnp.int32)
    unet_abs = abstract_params(unet, jnp.zeros((1, side, side, in_ch)), jnp.zeros((1,)), ctx, y=y)
    return assemble(
        unet_abs,
        _part(_ema_view(tensors, use_ema), "diffusion_model."),
        flax_path_to_compvis,
        source=f"U-Net (model.diffusion_model.*) of {ckpt_path}",
    )


def _cond_stage_params(cond, cond_cfg, tensors: dict, ckpt_path: str, vocab: str | None):
    """(tau_theta's parameters or None, a WordPiece tokenizer for a text model or None)."""
    if isinstance(cond, BERTEmbedder):
        cond_params = assemble(
            abstract_params(cond, jnp.zeros((1, 1), jnp.int32)),
            _part(tensors, "cond_stage_model."),
            flax_path_to_xtransformers,
            source=f"text cond stage (cond_stage_model.transformer.*) of {ckpt_path}",
        )
        if vocab is None:
            return cond_params, None
        tokenizer = WordPieceTokenizer.from_file(vocab, max_length=cond.max_seq_len)
        top = max(tokenizer.vocab.values())
        if top >= cond.vocab_size:
            raise WeightMismatchError(
                f"{vocab} has token ids up to {top}; the text embedder has "
                f"{cond.vocab_size} embeddings."
            )
        return cond_params, tokenizer
    if cond is None:
        return None, None
    example = jnp.zeros((1,), jnp.int32)
    if isinstance(cond, SpatialRescaler):
        in_ch = dict(cond_cfg.get("params", {})).get("in_channels", 3)
        example = jnp.zeros((1, 8, 8, in_ch), jnp.float32)
    cond_params = assemble(
        abstract_params(cond, example),
        _part(tensors, "cond_stage_model."),
        flax_path_to_compvis,
        source=f"cond stage (cond_stage_model.*) of {ckpt_path}",
    )
    return cond_params, None


def _check_no_stray(tensors, cond, cond_cfg, ignore_cond_stage: bool, ckpt_path: str) -> None:
    """Refuses tensors that belong to no part of the model (schedule buffers aside)."""
    known = ("model.", "model_ema.", "first_stage_model.")
    # `__is_first_stage__` registers the first stage again as cond_stage_model.
    if cond is not None or ignore_cond_stage or ccfg._target(cond_cfg) == "__is_first_stage__":
        known += ("cond_stage_model.",)
    stray = sorted(k for k in tensors if not k.startswith(known) and not _SCHEDULE_BUFFERS.match(k))
    if stray:
        raise WeightMismatchError(f"{ckpt_path}: unexpected tensors: {stray[:20]}")


def unet_in_channels(params: dict, first: Any) -> int:
    """The U-Net's input channels (latent plus any concat channels) from the YAML."""
    return int(params["unet_config"]["params"].get("in_channels", first.embed_dim))


def _schedule_from_config(params: dict) -> diffusion.NoiseSchedule:
    """The reference `make_beta_schedule`: its "linear" is linear in sqrt(beta)."""
    kind = params.get("beta_schedule", "linear")
    names = {"linear": "scaled_linear", "cosine": "cosine", "sqrt_linear": "linear"}
    if kind not in names:
        raise ccfg.UnsupportedConfigError(f"beta_schedule={kind!r} is not supported.")
    return diffusion.NoiseSchedule.create(
        names[kind],
        num_timesteps=int(params.get("timesteps", 1000)),
        beta_start=float(params.get("linear_start", 1e-4)),
        beta_end=float(params.get("linear_end", 2e-2)),
    )
