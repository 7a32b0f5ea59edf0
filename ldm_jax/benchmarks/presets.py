"""Benchmark presets: the networks, shapes and batch a benchmark runs (imports no JAX or torch).

A preset names a U-Net (the reference `unet_config.params` keys, built by
`models.factory.build_unet`), a first stage (`first_stage` keys, built by
`models.factory.build_first_stage`), the cross-attention context shape and the batch, so our
benchmark and the PyTorch peer (`benchmarks/peers`) build the same networks from one source.

  sd_small_cpu: the SD-style U-Net of issue 12 (block channels 64/128/256, two ResBlocks per
    level, spatial transformers on the first two levels, 8 heads, context 77x256, 18.15M
    parameters) on 32x32x4 latents, batch 8, float32; its autoencoder is an SD-style KL-f8 at
    half width (64/128/256/256) on 256x256 images.
  quickstart: the networks of `configs/quickstart.py` (read from the working directory, the
    repository root; the installed package never reads `configs/`) at its training batch.
  <path to a config file>: a paper config's (`configs/paper/*.py`) U-Net and first stage.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ldm_jax.config.files import load_config_file
from ldm_jax.config.model_config import model_config

PRESETS = ("sd_small_cpu", "quickstart")
QUICKSTART_CONFIG = os.path.join("configs", "quickstart.py")

# Microbenchmark shapes: the sd_small_cpu U-Net's first level (32x32 latents, 64 channels).
ATTENTION_SHAPE = dict(batch=8, q_len=1024, heads=8, head_dim=8)
ATTENTION_KEY_LENS = {"self": 1024, "cross": 77}
GROUPNORM_SHAPE = (8, 32, 32, 64)  # [B, H, W, C]

# Text-like conditions get 77 tokens; class or other single-vector conditions one token.
_TEXT_COND_STAGES = ("bert", "frozen_clip", "frozen_openclip")


@dataclasses.dataclass(frozen=True)
class Preset:
    """What a benchmark builds and feeds.

    Attributes:
      name: preset name or config path.
      unet: reference `unet_config.params` (with `image_size` and `in_channels`).
      first_stage: `first_stage` mapping (kind "kl" or "vq" and the ddconfig).
      context_len: cross-attention tokens L (0 when the U-Net takes no context).
      batch: U-Net batch (latents per step).
      ae_batch: images per autoencoder encode+decode.
    """

    name: str
    unet: dict[str, Any]
    first_stage: dict[str, Any]
    context_len: int
    batch: int
    ae_batch: int

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(h, w, c) of one U-Net input."""
        side = self.unet["image_size"]
        return side, side, self.unet["in_channels"]

    @property
    def context_dim(self) -> int | None:
        return self.unet.get("context_dim") if self.context_len else None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one autoencoder input image."""
        fs = self.first_stage
        return fs["resolution"], fs["resolution"], fs.get("in_channels", 3)


SD_SMALL_UNET = dict(
    image_size=32,
    in_channels=4,
    out_channels=4,
    model_channels=64,
    channel_mult=(1, 2, 4),
    num_res_blocks=2,
    attention_resolutions=(1, 2),
    num_heads=8,
    use_spatial_transformer=True,
    transformer_depth=1,
    context_dim=256,
    legacy=False,
)

SD_SMALL_AUTOENCODER = dict(
    kind="kl",
    ch=64,
    ch_mult=(1, 2, 4, 4),
    num_res_blocks=2,
    z_channels=4,
    embed_dim=4,
    in_channels=3,
    out_ch=3,
    attn_resolutions=(),
    resolution=256,
    double_z=True,
)


def _from_model_config(name: str, model: dict[str, Any], batch: int) -> Preset:
    unet, fs = dict(model["unet"]), dict(model["first_stage"])
    cond = model.get("cond_stage") or {"kind": "none"}
    crossattn = model.get("conditioning_key") in ("crossattn", "hybrid") or (
        model.get("conditioning_key") is not None and unet.get("context_dim")
    )
    context_len = (77 if cond["kind"] in _TEXT_COND_STAGES else 1) if crossattn else 0
    return Preset(name, unet, fs, context_len, batch, max(1, batch // 4))


def get_preset(name: str, batch: int = 0) -> Preset:
    """The named preset, or the networks of the config file at path `name`.

    Args:
      name: "sd_small_cpu", "quickstart" or a config file path.
      batch: U-Net batch override (0: the preset's; the autoencoder batch scales with it).

    Raises:
      ValueError: for an unknown name that is not a file.
    """
    if name == "sd_small_cpu":
        b = batch or 8
        return Preset(name, dict(SD_SMALL_UNET), dict(SD_SMALL_AUTOENCODER), 77, b, max(1, b // 4))
    path = QUICKSTART_CONFIG if name == "quickstart" else name
    if not os.path.isfile(path):
        raise ValueError(
            f"--preset: {name!r} is neither one of {PRESETS} nor a config file (the quickstart "
            f"preset reads {QUICKSTART_CONFIG} from the working directory: run from the "
            "repository root or pass the file's path)."
        )
    config = load_config_file(path)
    default_batch = config.train.batch_size if "train" in config else 8
    return _from_model_config(name, model_config(config), batch or default_batch)
