"""LoRA on the text encoder during a LoRA fine-tune (`finetune.lora.text_encoder=True`).

The U-Net-only run (`trainers/finetune.py`) feeds the frozen CLIP's contexts, computed once per
caption. With text-encoder LoRA the condition arrays are the captions' token ids [B, L] (the
workdir's `tokenizer/`, `ClipTokenizer`), and the compiled step runs the CLIP text transformer
on `merge_lora(clip_base, lora["text_encoder"])` (q_proj, k_proj, v_proj, out_proj; the U-Net
LoRA's rank and alpha), so the gradient reaches both LoRA trees:

  LoRA tree (train state: params, optimizer, EMA)   {"unet": U-Net LoRA, "text_encoder": CLIP LoRA}
  frozen step argument                             {"unet": base denoiser (sharded like the
                                                    model), "text_encoder": base CLIP (replicated)}

Condition dropout replaces a row's ids by the empty caption's, before the encoder (what the
sampler's unconditional branch encodes).

Folders of the fine-tune workdir:
  text_encoder_base/  the base workdir's text encoder, copied once; the only source of the
                      frozen CLIP (a resumed run re-merges from it, never from a merged copy).
  text_encoder/       after training, the base CLIP with the EMA LoRA merged in: what
                      `python -m ldm_jax.sample`, `evaluate` and `export` read
                      (`workdir/text_encoder.prompt_encoder`). Before the first run ends it is
                      the base's copy.
  lora/pytorch_lora_weights.safetensors   both EMA LoRA trees in diffusers' format.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from ldm_jax.config import builders
from ldm_jax.config.options import lora_config, text_encoder_lora_config, unet_lora
from ldm_jax.config.validation import ConfigError
from ldm_jax.data import latents_in_memory as latent_cache
from ldm_jax.interop import clip_weights
from ldm_jax.interop.lora_diffusers import save_diffusers_lora
from ldm_jax.models.bpe_tokenizer import ClipTokenizer
from ldm_jax.models.clip_text import ClipTextConfig, ClipTextTransformer
from ldm_jax.models.lora import init_lora_params, merge_lora
from ldm_jax.sampling import images as image_grid
from ldm_jax.sampling.generate import make_sampler
from ldm_jax.trainers import latents
from ldm_jax.trainers.conditions import Conditions, context_dim, drop_prob, drop_rows
from ldm_jax.training.state import create_state
from ldm_jax.workdir import layout
from ldm_jax.workdir.latent_cache import make_encode_fn
from ldm_jax.workdir.text_encoder import skipped_layers

BASE_FOLDER = "text_encoder_base"
# The batch entry, inside the step only, that carries the merged CLIP parameters to the
# condition function (after gradient accumulation has split the batch).
TEXT_PARAMS = "text_encoder_params"


class TextEncoder(NamedTuple):
    """The frozen base CLIP of a text-encoder LoRA run, and how captions reach it."""

    config: ClipTextConfig
    params: Any  # float32 numpy, from text_encoder_base/
    tokenizer: ClipTokenizer
    skip_last_layers: int

    def encode(self, params: Any, ids: jax.Array) -> jax.Array:
        """Token ids [N, L] -> context [N, L, D] float32 (traceable)."""
        model = ClipTextTransformer(self.config)
        return model.apply({"params": params}, ids, self.skip_last_layers).hidden


def load_text_encoder(
    config: ml_collections.ConfigDict, workdir: str, base_dir: str
) -> TextEncoder:
    """Copies the base workdir's text encoder to `<workdir>/text_encoder_base` when missing
    (process 0) and reads it with the workdir's tokenizer.

    Raises:
      ConfigError: the CLIP's width is not the U-Net's context_dim.
    """
    cond = config.model.cond_stage
    target = os.path.join(workdir, BASE_FOLDER)
    if jax.process_index() == 0 and not os.path.isdir(target):
        shutil.copytree(os.path.join(base_dir, cond.text_encoder), target)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("finetune_text_encoder_base")
    clip_config, params = clip_weights.load_clip_text(target)
    if clip_config.hidden_size != context_dim(config):
        raise ConfigError(
            f"config.finetune.lora.text_encoder: the text encoder in {target} is "
            f"{clip_config.hidden_size} wide, the U-Net's context_dim {context_dim(config)}."
        )
    tokenizer = ClipTokenizer.from_dir(
        os.path.join(workdir, cond.tokenizer), max_length=int(cond.max_length)
    )
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
    return TextEncoder(clip_config, params, tokenizer, skipped_layers(cond))


def make_conditions(config: ml_collections.ConfigDict, text: TextEncoder) -> Conditions:
    """Context conditions read from token ids: dropout to the empty caption's ids, then the
    merged CLIP of `batch[TEXT_PARAMS]` (`make_merge_fn` puts it there)."""
    null = text.tokenizer([""])  # [1, L]
    p = drop_prob(config)

    def train(batch, rng):
        ids = drop_rows(rng, batch["tokens"], jnp.asarray(null), p)  # [B, L]
        return text.encode(batch[TEXT_PARAMS], ids), None  # [B, L, D]

    return Conditions("context", ("tokens",), train, null)


def train_arrays(
    config: ml_collections.ConfigDict, ae_params: Any, text: TextEncoder
) -> dict[str, np.ndarray]:
    """The training split's latents ("mean", "logvar") and caption ids "tokens" int32 [N, L]."""
    split = latents.load_train_split(config)
    if split.get("caption") is None:
        raise ConfigError(
            f"config.data.name: dataset {config.data.name!r} has no captions, which "
            "finetune.lora.text_encoder needs; use a dataset with captions."
        )
    mean, logvar = latent_cache.encode_arrays(make_encode_fn(config, ae_params), split["image"])
    arrays = {"mean": mean}
    if not builders.has_deterministic_latents(config):
        arrays["logvar"] = logvar
    return arrays | {"tokens": text.tokenizer([str(t) for t in split["caption"]])}


def lora_state_init_fn(
    config: ml_collections.ConfigDict, tx, abstract_unet: Any, text: TextEncoder
):
    """rng -> a fresh state whose params are {"unet": U-Net LoRA, "text_encoder": CLIP LoRA}."""
    unet_cfg, text_cfg = lora_config(config), text_encoder_lora_config(config)
    abstract_text = jax.eval_shape(lambda: text.params)

    def init(rng):
        unet_rng, text_rng, state_rng = jax.random.split(rng, 3)
        lora = {
            "unet": init_lora_params(unet_rng, abstract_unet, unet_cfg),
            "text_encoder": init_lora_params(text_rng, abstract_text, text_cfg),
        }
        return create_state(lora, tx, state_rng, use_ema=True)

    return init


def make_merge_fn(config: ml_collections.ConfigDict) -> Callable[[Any, Any], tuple[Any, dict]]:
    """(frozen {"unet", "text_encoder"}, LoRA tree) -> (denoiser params, batch entries)."""
    unet_cfg, text_cfg = lora_config(config), text_encoder_lora_config(config)

    def merge(frozen, lora):
        unet = merge_lora(frozen["unet"], lora["unet"], unet_cfg)
        clip = merge_lora(frozen["text_encoder"], lora["text_encoder"], text_cfg)
        return unet, {TEXT_PARAMS: clip}

    return merge


def frozen_arguments(
    text: TextEncoder, unet: Any, unet_shardings: Any, mesh: jax.sharding.Mesh
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The step's frozen argument {"unet", "text_encoder"} on the mesh (the CLIP replicated),
    and its shardings."""
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    clip_shardings = jax.tree.map(lambda _: replicated, text.params)
    clip = jax.tree.map(
        lambda x, s: jax.make_array_from_callback(x.shape, s, lambda idx: x[idx]),
        text.params,
        clip_shardings,
    )
    shardings = {"unet": unet_shardings, "text_encoder": clip_shardings}
    return {"unet": unet, "text_encoder": clip}, shardings


def make_grid_fn(
    config: ml_collections.ConfigDict,
    text: TextEncoder,
    first_batch: dict[str, np.ndarray],
    ae_params: Any,
    frozen: dict[str, Any],
) -> Callable[[Any, float], np.ndarray]:
    """(EMA LoRA tree, scale factor) -> a grid of up to 8 samples of the first batch's captions,
    encoded (and the empty caption) by the CLIP with the EMA LoRA merged in."""
    s = config.sample
    num = min(8, len(first_batch["mean"]))
    ids = jnp.asarray(first_batch["tokens"][:num])  # [num, L]
    null = jnp.asarray(text.tokenizer([""]))  # [1, L]
    sample = make_sampler(config, s.sampler, s.steps)
    merge = jax.jit(make_merge_fn(config))
    encode = jax.jit(text.encode)
    h, w, c = first_batch["mean"].shape[1:]

    def grid(ema: Any, scale_factor: float) -> np.ndarray:
        unet, extra = merge(frozen, ema)
        clip = extra[TEXT_PARAMS]
        images = sample(
            ae_params,
            unet,
            encode(clip, ids),
            encode(clip, null),
            jax.random.PRNGKey(config.seed),
            jnp.float32(s.guidance_scale),
            jnp.float32(s.eta),
            jnp.float32(scale_factor),
            shape=(num, h, w, c),
        )
        return image_grid.make_grid(np.asarray(images), columns=num)

    return grid


def write_outputs(
    config: ml_collections.ConfigDict, workdir: str, ema: Any, text: TextEncoder
) -> str:
    """Writes both EMA LoRA trees as the diffusers file and the merged text encoder as
    `<workdir>/text_encoder` (process 0); returns the LoRA file."""
    ema = jax.tree.map(np.asarray, ema)
    text_cfg = text_encoder_lora_config(config)
    path = save_diffusers_lora(
        layout.lora_dir(workdir),
        unet_lora(config, ema).get("diffusion_model", {}),
        lora_config(config),
        int(config.model.unet.num_res_blocks),
        text_encoder_lora=ema["text_encoder"],
        text_encoder_config=text_cfg,
    )
    merged = jax.tree.map(np.asarray, merge_lora(text.params, ema["text_encoder"], text_cfg))
    target = os.path.join(workdir, config.model.cond_stage.text_encoder)
    staging = target + ".tmp"
    shutil.rmtree(staging, ignore_errors=True)
    clip_weights.save_clip_text(text.config, merged, staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    clip_weights.clip_prompt_encoder.cache_clear()  # a cached encoder of the old folder
    return path
