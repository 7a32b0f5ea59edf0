"""The paper's time-conditioned U-Net with SpatialTransformer cross-attention (NHWC).

Block names mirror the reference `UNetModel`: `input_blocks_{i}_{j}`, `middle_block_{j}`,
`output_blocks_{i}_{j}`, `time_embed_{0,2}`, `label_emb`, `out_{0,2}`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.models import dense_grad
from ldm_jax.models.attention import AttentionBlock, SpatialTransformer
from ldm_jax.models.gradient_order import early_param_grads
from ldm_jax.models.layers import (
    Downsample,
    Dtype,
    GroupNormSiLU,
    Upsample,
    conv3x3,
    timestep_embedding,
    upsample_nearest,
)
from ldm_jax.models.partitioning import EMBED, MLP, conv_kernel, dense_kernel, embedding_table


class ResBlock(nn.Module):
    """The U-Net's residual block with timestep-embedding injection.

    Attributes:
      out_channels: output channels (defaults to input channels).
      use_scale_shift_norm: FiLM-style (1 + scale) * norm(h) + shift instead of h + emb.
      use_conv_skip: 3x3 instead of 1x1 skip convolution when channels change.
      up / down: resample inside the block (`resblock_updown`): after the first norm and
        activation both h and the skip input x are resampled (nearest x2 or 2x2 average pooling,
        no parameters), then the first conv runs at the new resolution.
    """

    out_channels: int | None = None
    dropout: float = 0.0
    use_scale_shift_norm: bool = False
    use_conv_skip: bool = False
    num_groups: int = 32
    dtype: Dtype = jnp.float32
    up: bool = False
    down: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, deterministic: bool = True) -> jax.Array:
        in_ch = x.shape[-1]
        out_ch = self.out_channels or in_ch
        h = GroupNormSiLU(self.num_groups, 1e-5, name="in_layers_0")(x)
        if self.up:
            h, x = upsample_nearest(h), upsample_nearest(x)
        elif self.down:
            h, x = (nn.avg_pool(a, (2, 2), strides=(2, 2)) for a in (h, x))
        h = conv3x3(out_ch, "in_layers_2", self.dtype)(h)
        emb_width = 2 * out_ch if self.use_scale_shift_norm else out_ch
        emb_out = nn.Dense(
            emb_width, dtype=self.dtype, kernel_init=dense_kernel(), name="emb_layers_1"
        )(nn.silu(emb))
        emb_out = emb_out[:, None, None, :]  # [B, 1, 1, C']
        out_norm = GroupNormSiLU(self.num_groups, 1e-5, name="out_layers_0")
        if self.use_scale_shift_norm:
            scale, shift = jnp.split(emb_out, 2, axis=-1)
            h = out_norm(h, modulation=(scale, shift))
        else:
            h = out_norm(h, add=emb_out)
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        h = nn.Conv(
            out_ch,
            (3, 3),
            padding=((1, 1), (1, 1)),
            dtype=self.dtype,
            kernel_init=conv_kernel(init=nn.initializers.zeros),
            name="out_layers_3",
        )(h)
        if in_ch != out_ch:
            kernel = (3, 3) if self.use_conv_skip else (1, 1)
            x = nn.Conv(
                out_ch,
                kernel,
                padding="SAME",
                dtype=self.dtype,
                kernel_init=conv_kernel(),
                name="skip_connection",
            )(x)
        return x + h


def attention_heads(
    ch: int,
    num_heads: int,
    num_head_channels: int,
    num_heads_upsample: int = -1,
    use_spatial_transformer: bool = True,
    legacy: bool = True,
    decoder: bool = False,
) -> tuple[int, int]:
    """(heads, width per head) of an attention layer at width `ch`, as the reference U-Net.

    SpatialTransformer: heads = num_heads, or ch // num_head_channels; each head is
    ch // heads wide when `legacy`, else num_head_channels (or ch // num_heads).
    AttentionBlock: heads = ch // num_head_channels when that is set; otherwise num_heads
    (num_heads_upsample in the decoder) when `legacy`, else ch // (ch // num_heads).
    The width returned for an AttentionBlock is ch // heads.
    """
    nhc = num_head_channels
    if nhc == -1:
        heads, dim_head = num_heads, ch // num_heads
    else:
        heads, dim_head = ch // nhc, nhc
    if use_spatial_transformer:
        return heads, (ch // heads if legacy else dim_head)
    if legacy:
        dim_head = nhc
    if dim_head == -1:
        up = num_heads_upsample if num_heads_upsample != -1 else num_heads
        heads = up if decoder else num_heads
    else:
        if ch % dim_head:
            raise ValueError(
                f"AttentionBlock: {ch} channels not divisible by head width {dim_head}."
            )
        heads = ch // dim_head
    return heads, ch // heads


REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": dense_grad.dots_saveable_policy(),
}


def _maybe_remat(block: type[nn.Module], policy: str, static_argnums: tuple[int, ...]):
    """`block`, or its rematerialised version under the named policy (see `REMAT_POLICIES`)."""
    if policy not in REMAT_POLICIES:
        raise ValueError(f"Unknown remat policy {policy!r}; use one of {sorted(REMAT_POLICIES)}.")
    if policy == "none":
        return block
    return nn.remat(block, policy=REMAT_POLICIES[policy], static_argnums=static_argnums)


class UNetModel(nn.Module):
    """eps_theta(z_t, t, y): the denoising U-Net of the paper (the reference `UNetModel`).

    The input channels are those of `x` (`in_channels` > `out_channels` for concat conditioning).

    Attributes:
      model_channels: base width; level l has model_channels * channel_mult[l] channels.
      out_channels: output channels (latent channels for eps-prediction).
      num_res_blocks: ResBlocks per level on the way down (one more on the way up).
      attention_resolutions: downsampling rates ds (1, 2, 4, ...) that get attention.
      channel_mult: width multiplier per level.
      num_heads / num_head_channels: heads, or channels per head (set exactly one; -1 unset).
      num_heads_upsample: heads of the decoder's `AttentionBlock`s when `num_heads` is used
        (-1: same as `num_heads`; deprecated in the reference, kept for fidelity).
      use_spatial_transformer: SpatialTransformer blocks (self-, cross-attention, GEGLU
        feed-forward) instead of the plain `AttentionBlock`.
      transformer_depth: BasicTransformerBlocks per SpatialTransformer.
      context_dim: width of tau_theta(y) tokens for cross-attention (None: the transformer's
        second attention is self-attention; required by the reference when transformers are on).
      num_classes: adds a learned class embedding to the time embedding ("adm" conditioning).
      conv_resample: learned 3x3 convs for resampling (else avg-pool / nearest only).
      use_scale_shift_norm: FiLM-like (1 + scale) * norm(h) + shift in the ResBlocks.
      resblock_updown: resample with ResBlocks (up/down) instead of Upsample/Downsample.
      use_new_attention_order: `QKVAttention` instead of `QKVAttentionLegacy` channel order.
      use_linear_in_transformer: Dense instead of 1x1-conv projections in transformers.
      legacy: the reference code's head-width convention (see `attention_heads`).
      dtype: compute dtype (parameters stay float32; norms and softmax run in float32).
      remat_policy: rematerialise each ResBlock and attention block in the backward pass
        (`REMAT_POLICIES`: "none", "full" saves nothing, "dots" saves matmul/conv outputs
        without batch dimensions). Parameters and outputs are unchanged.
    """

    model_channels: int
    out_channels: int
    num_res_blocks: int
    attention_resolutions: Sequence[int]
    channel_mult: Sequence[int] = (1, 2, 4, 8)
    num_heads: int = -1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_spatial_transformer: bool = True
    transformer_depth: int = 1
    context_dim: int | None = None
    num_classes: int | None = None
    dropout: float = 0.0
    conv_resample: bool = True
    use_scale_shift_norm: bool = False
    resblock_updown: bool = False
    use_new_attention_order: bool = False
    use_linear_in_transformer: bool = False
    legacy: bool = True
    num_groups: int = 32
    dtype: Dtype = jnp.float32
    remat_policy: str = "none"

    def _attention(self, ch: int, name: str, decoder: bool = False) -> Callable[..., jax.Array]:
        heads, dim_head = attention_heads(
            ch,
            self.num_heads,
            self.num_head_channels,
            self.num_heads_upsample,
            self.use_spatial_transformer,
            self.legacy,
            decoder,
        )
        if self.use_spatial_transformer:
            transformer = _maybe_remat(SpatialTransformer, self.remat_policy, (3,))(
                heads,
                dim_head,
                self.transformer_depth,
                self.dropout,
                self.use_linear_in_transformer,
                self.num_groups,
                self.dtype,
                name=name,
            )
            return early_param_grads(transformer, num_static=1)
        return early_param_grads(
            _maybe_remat(AttentionBlock, self.remat_policy, ())(
                heads, self.use_new_attention_order, self.num_groups, self.dtype, name=name
            )
        )

    def _resblock(self, out_ch: int | None, name: str, up: bool = False, down: bool = False):
        block = _maybe_remat(ResBlock, self.remat_policy, (3,))(
            out_ch,
            self.dropout,
            self.use_scale_shift_norm,
            False,
            self.num_groups,
            self.dtype,
            up=up,
            down=down,
            name=name,
        )
        return early_param_grads(block, num_static=1)

    def _validate(self, context: jax.Array | None, y: jax.Array | None) -> None:
        if (self.num_heads == -1) == (self.num_head_channels == -1):
            raise ValueError("UNetModel: set exactly one of num_heads and num_head_channels.")
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("UNetModel: pass class labels y if and only if num_classes is set.")
        if context is not None and not self.use_spatial_transformer:
            raise ValueError("UNetModel: cross-attention context needs use_spatial_transformer.")

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        context: jax.Array | None = None,
        y: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Predicts the model output for noisy latents.

        Args:
          x: [B, h, w, C_in] noisy latents (plus concat conditioning channels).
          t: [B] integer timesteps.
          context: [B, L, context_dim] cross-attention tokens tau_theta(y), or None.
          y: [B] class labels when `num_classes` is set.
          deterministic: disables dropout.

        Returns:
          [B, h, w, out_channels] float32.
        """
        self._validate(context, y)
        ted = 4 * self.model_channels
        emb = timestep_embedding(t, self.model_channels)
        emb = nn.Dense(ted, dtype=self.dtype, kernel_init=dense_kernel(), name="time_embed_0")(
            emb.astype(self.dtype)
        )
        emb = nn.Dense(
            ted, dtype=self.dtype, kernel_init=dense_kernel((MLP, EMBED)), name="time_embed_2"
        )(nn.silu(emb))
        if self.num_classes is not None:
            emb = emb + nn.Embed(
                self.num_classes,
                ted,
                dtype=self.dtype,
                embedding_init=embedding_table(),
                name="label_emb",
            )(y)
        if context is not None:
            context = context.astype(self.dtype)

        def attend(h: jax.Array, name: str, decoder: bool = False) -> jax.Array:
            layer = self._attention(h.shape[-1], name, decoder)
            if self.use_spatial_transformer:
                return layer(h, context, deterministic)
            return layer(h)

        h = conv3x3(self.model_channels, "input_blocks_0_0", self.dtype)(x.astype(self.dtype))
        skips, ds, block = [h], 1, 1
        for level, mult in enumerate(self.channel_mult):
            for _ in range(self.num_res_blocks):
                h = self._resblock(mult * self.model_channels, f"input_blocks_{block}_0")(
                    h, emb, deterministic
                )
                if ds in self.attention_resolutions:
                    h = attend(h, f"input_blocks_{block}_1")
                skips.append(h)
                block += 1
            if level != len(self.channel_mult) - 1:
                name = f"input_blocks_{block}_0"
                if self.resblock_updown:
                    h = self._resblock(None, name, down=True)(h, emb, deterministic)
                else:
                    h = Downsample(self.conv_resample, False, dtype=self.dtype, name=name)(h)
                skips.append(h)
                ds, block = ds * 2, block + 1

        h = self._resblock(None, "middle_block_0")(h, emb, deterministic)
        h = attend(h, "middle_block_1")
        h = self._resblock(None, "middle_block_2")(h, emb, deterministic)

        block = 0
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            for i in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = self._resblock(self.model_channels * mult, f"output_blocks_{block}_0")(
                    h, emb, deterministic
                )
                sub = 1
                if ds in self.attention_resolutions:
                    h = attend(h, f"output_blocks_{block}_1", decoder=True)
                    sub = 2
                if level and i == self.num_res_blocks:
                    name = f"output_blocks_{block}_{sub}"
                    if self.resblock_updown:
                        h = self._resblock(None, name, up=True)(h, emb, deterministic)
                    else:
                        h = Upsample(self.conv_resample, dtype=self.dtype, name=name)(h)
                    ds //= 2
                block += 1

        h = GroupNormSiLU(self.num_groups, 1e-5, name="out_0")(h)
        h = nn.Conv(
            self.out_channels,
            (3, 3),
            padding=((1, 1), (1, 1)),
            dtype=self.dtype,
            kernel_init=conv_kernel(init=nn.initializers.zeros),
            name="out_2",
        )(h)
        return h.astype(jnp.float32)
