"""Reference parameter counts for the paper's configs, computed independently of ldm_jax.

* U-Nets and first stages that diffusers can express are built as diffusers PyTorch models on
  the meta device (no memory) from the equivalent config, and their parameters are summed.
  diffusers' blocks have the reference's parameter layout: a `ResnetBlock2D` is the reference
  `ResBlock`/`ResnetBlock`, its `AttnDownBlock2D`/`Attention` is the reference `AttentionBlock`
  (q, k, v, out projections with biases = the reference's 1-D conv `qkv` + `proj_out`, plus
  the GroupNorm), `Transformer2DModel` is the reference `SpatialTransformer`, and
  `ResnetDownsampleBlock2D`/`downsample_type="resnet"` is `resblock_updown`.
* tau_theta has closed forms, derived from the reference code (see each function).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import diffusers  # noqa: E402  (test-only dependency, pinned in setup.cfg [test])
import torch  # noqa: E402


def _numel(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _meta(cls, **kwargs) -> int:
    with torch.device("meta"):
        return _numel(cls(**kwargs))


def unet_count(u: Mapping[str, Any]) -> int:
    """The reference `UNetModel` count, via diffusers UNet2DModel / UNet2DConditionModel."""
    mults, attn = tuple(u["channel_mult"]), set(u["attention_resolutions"])
    chans = tuple(u["model_channels"] * m for m in mults)
    has_attn = [2**level in attn for level in range(len(mults))]
    common = dict(
        sample_size=u["image_size"],
        in_channels=u["in_channels"],
        out_channels=u["out_channels"],
        block_out_channels=chans,
        layers_per_block=u["num_res_blocks"],
        resnet_time_scale_shift="scale_shift" if u.get("use_scale_shift_norm") else "default",
        num_class_embeds=u.get("num_classes"),
        norm_num_groups=32,
    )
    if u.get("use_spatial_transformer"):
        assert not u.get("resblock_updown"), "diffusers' cross-attention blocks resample by conv"
        return _meta(
            diffusers.UNet2DConditionModel,
            down_block_types=tuple(
                "CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attn
            ),
            up_block_types=tuple(
                "CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn)
            ),
            mid_block_type="UNetMidBlock2DCrossAttn",
            cross_attention_dim=u["context_dim"],
            transformer_layers_per_block=u.get("transformer_depth", 1),
            use_linear_projection=bool(u.get("use_linear_in_transformer")),
            attention_head_dim=8,  # heads do not change the count (inner width = channels)
            **common,
        )
    updown = bool(u.get("resblock_updown"))
    plain_down = "ResnetDownsampleBlock2D" if updown else "DownBlock2D"
    plain_up = "ResnetUpsampleBlock2D" if updown else "UpBlock2D"
    return _meta(
        diffusers.UNet2DModel,
        down_block_types=tuple("AttnDownBlock2D" if a else plain_down for a in has_attn),
        up_block_types=tuple("AttnUpBlock2D" if a else plain_up for a in reversed(has_attn)),
        downsample_type="resnet" if updown else "conv",
        upsample_type="resnet" if updown else "conv",
        attention_head_dim=8,
        # diffusers drops the mid-block attention's GroupNorm under scale-shift unless told;
        # the reference AttentionBlock always has it.
        attn_norm_num_groups=32,
        **common,
    )


def first_stage_count(f: Mapping[str, Any]) -> int:
    """The reference `AutoencoderKL` / `VQModel` count, via diffusers."""
    mults = tuple(f["ch_mult"])
    res = [f.get("resolution", 256) // 2**level for level in range(len(mults))]
    has_attn = [r in set(f.get("attn_resolutions", ())) for r in res]
    common = dict(
        in_channels=f.get("in_channels", 3),
        out_channels=f.get("out_ch", 3),
        down_block_types=tuple(
            "AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in has_attn
        ),
        up_block_types=tuple(
            "AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(has_attn)
        ),
        block_out_channels=tuple(f["ch"] * m for m in mults),
        layers_per_block=f["num_res_blocks"],
        latent_channels=f["z_channels"],
        norm_num_groups=32,
        mid_block_add_attention=f.get("attn_type", "vanilla") != "none",
    )
    if f["kind"] == "kl":
        # diffusers' KL model ties embed_dim to latent_channels (equal in every released one).
        assert f["embed_dim"] == f["z_channels"]
        return _meta(diffusers.AutoencoderKL, **common)
    return _meta(
        diffusers.VQModel, num_vq_embeddings=f["n_embed"], vq_embed_dim=f["embed_dim"], **common
    )


def bert_embedder_count(n_embed: int, n_layer: int, vocab_size: int, max_seq_len: int) -> int:
    """The reference `BERTEmbedder` count, from `ldm/modules/x_transformer.py`.

    TransformerWrapper(num_tokens=vocab_size, max_seq_len, attn_layers=Encoder(dim, depth)):
      token_emb    Embedding(vocab, d)                       vocab * d
      pos_emb.emb  Embedding(max_seq_len, d)                 L * d
      per depth, layer 'a': LayerNorm(d) 2d + Attention with the defaults heads=8, dim_head=64:
                   to_q/to_k/to_v Linear(d, 512, bias=False) 3 * 512 d,
                   to_out Linear(512, d) 512 d + d
      per depth, layer 'f': LayerNorm(d) 2d + FeedForward(mult=4, glu=False):
                   Linear(d, 4d) 4d^2 + 4d, Linear(4d, d) 4d^2 + d
      norm         LayerNorm(d)                              2d
      to_logits    Linear(d, vocab) (tie_embedding=False)    d * vocab + vocab
    """
    d, inner = n_embed, 8 * 64
    attn = 2 * d + 3 * d * inner + inner * d + d
    ff = 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    return (
        vocab_size * d
        + max_seq_len * d
        + n_layer * (attn + ff)
        + 2 * d
        + d * vocab_size
        + vocab_size
    )


def cond_stage_count(c: Mapping[str, Any] | None) -> int | None:
    """tau_theta counts: ClassEmbedder = Embedding(n_classes, d); SpatialRescaler = the 1x1
    `channel_mapper` conv (in*out, plus out when biased); Identity / first stage / none = 0."""
    kind = "none" if c is None else c["kind"]
    if kind == "class":
        return c["n_classes"] * c["embed_dim"]
    if kind == "bert":
        return bert_embedder_count(
            c["n_embed"], c["n_layer"], c.get("vocab_size", 30522), c.get("max_seq_len", 77)
        )
    if kind == "spatial_rescaler":
        out = c.get("out_channels")
        if out is None:
            return 0
        return c["in_channels"] * out + (out if c.get("bias") else 0)
    if kind in ("none", "identity", "first_stage"):
        return 0
    return None  # frozen external encoders are not built
