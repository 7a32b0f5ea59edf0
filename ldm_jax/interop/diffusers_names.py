"""Renaming between the paper's state-dict names and diffusers' (UNet2DConditionModel, VAEs).

Both directions go through the paper's names, which ours mirror (`tensors.flax_path_to_compvis`):
  U-Net  input_blocks.0.0                 <-> conv_in
         input_blocks.{1+i(n+1)+j}.0 / .1  <-> down_blocks.i.resnets.j / attentions.j
         input_blocks.{(i+1)(n+1)}.0.op    <-> down_blocks.i.downsamplers.0.conv
         middle_block.0 / .1 / .2          <-> mid_block.resnets.0 / attentions.0 / resnets.1
         output_blocks.{i(n+1)+j}.0 / .1   <-> up_blocks.i.resnets.j / attentions.j
         output_blocks.{..}.{1|2}.conv     <-> up_blocks.i.upsamplers.0.conv
         time_embed.0 / .2, label_emb, out.0 / .2
             <-> time_embedding.linear_1 / _2, class_embedding, conv_norm_out / conv_out
         ResBlock in_layers.0, in_layers.2, emb_layers.1, out_layers.0, out_layers.3,
                  skip_connection
             <-> norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut
  VAE    {en,de}coder.mid.block_1 / attn_1 / block_2
             <-> mid_block.resnets.0 / attentions.0 / resnets.1
         encoder.down.i.block.j / attn.j / downsample <-> encoder.down_blocks.i.resnets.j / ...
         decoder.up.i.*                    <-> decoder.up_blocks.{L-1-i}.* (diffusers counts upward)
         attention norm, q, k, v, proj_out  <-> group_norm, to_q, to_k, to_v, to_out.0 (Linear)
         nin_shortcut, norm_out            <-> conv_shortcut, conv_norm_out
(n = num_res_blocks, L = number of levels.) The transformer blocks' names are the same in both.
"""

from __future__ import annotations

import re

_RESBLOCK = {
    "in_layers.0.": "norm1.",
    "in_layers.2.": "conv1.",
    "emb_layers.1.": "time_emb_proj.",
    "out_layers.0.": "norm2.",
    "out_layers.3.": "conv2.",
    "skip_connection.": "conv_shortcut.",
}
_VAE_ATTN = {
    "norm.": "group_norm.",
    "q.": "to_q.",
    "k.": "to_k.",
    "v.": "to_v.",
    "proj_out.": "to_out.0.",
}
_VAE_RES = {"nin_shortcut.": "conv_shortcut."}
_TOP = {
    "time_embed.0.": "time_embedding.linear_1.",
    "time_embed.2.": "time_embedding.linear_2.",
    "label_emb.": "class_embedding.",
    "out.0.": "conv_norm_out.",
    "out.2.": "conv_out.",
    "input_blocks.0.0.": "conv_in.",
}


def _rename_prefix(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old):
            return new + rest[len(old) :]
    return rest


def unet_to_diffusers(name: str, num_res_blocks: int) -> str:
    """A U-Net tensor name, paper layout -> diffusers layout (unknown names pass unchanged)."""
    top = _rename_prefix(name, _TOP)
    if top != name:
        return top
    n = num_res_blocks + 1
    m = re.fullmatch(r"(input_blocks|middle_block|output_blocks)\.(\d+)\.(?:(\d+)\.)?(.*)", name)
    if not m:
        return name
    kind, a, b, rest = m.group(1), int(m.group(2)), m.group(3), m.group(4)
    if kind == "middle_block":
        rest = name[len(f"middle_block.{a}.") :]
        prefix = {
            0: "mid_block.resnets.0.",
            1: "mid_block.attentions.0.",
            2: "mid_block.resnets.1.",
        }
        return prefix[a] + (rest if a == 1 else _rename_prefix(rest, _RESBLOCK))
    sub = int(b)
    if kind == "input_blocks":
        level, j = divmod(a - 1, n)
        if j == num_res_blocks:
            return f"down_blocks.{level}.downsamplers.0.conv." + rest.removeprefix("op.")
        if sub == 0:
            return f"down_blocks.{level}.resnets.{j}." + _rename_prefix(rest, _RESBLOCK)
        return f"down_blocks.{level}.attentions.{j}.{rest}"
    level, j = divmod(a, n)
    if sub == 0:
        return f"up_blocks.{level}.resnets.{j}." + _rename_prefix(rest, _RESBLOCK)
    if rest.startswith("conv."):
        return f"up_blocks.{level}.upsamplers.0.{rest}"
    return f"up_blocks.{level}.attentions.{j}.{rest}"


def vae_to_diffusers(name: str, num_levels: int) -> str:
    """An autoencoder tensor name, paper layout -> diffusers layout."""
    m = re.fullmatch(r"(encoder|decoder)\.(.*)", name)
    if not m:
        return name
    part, rest = m.groups()
    if rest.startswith("norm_out."):
        return f"{part}.conv_norm_out.{rest[len('norm_out.') :]}"
    mid = re.fullmatch(r"mid\.(block_1|block_2|attn_1)\.(.*)", rest)
    if mid:
        which, tail = mid.groups()
        if which == "attn_1":
            return f"{part}.mid_block.attentions.0." + _rename_prefix(tail, _VAE_ATTN)
        idx = 0 if which == "block_1" else 1
        return f"{part}.mid_block.resnets.{idx}." + _rename_prefix(tail, _VAE_RES)
    lvl = re.fullmatch(r"(down|up)\.(\d+)\.(block|attn)\.(\d+)\.(.*)", rest)
    if lvl:
        direction, i, kind, j, tail = lvl.groups()
        i = int(i) if direction == "down" else num_levels - 1 - int(i)
        if kind == "block":
            return f"{part}.{direction}_blocks.{i}.resnets.{j}." + _rename_prefix(tail, _VAE_RES)
        return f"{part}.{direction}_blocks.{i}.attentions.{j}." + _rename_prefix(tail, _VAE_ATTN)
    res = re.fullmatch(r"(down|up)\.(\d+)\.(downsample|upsample)\.(.*)", rest)
    if res:
        direction, i, kind, tail = res.groups()
        i = int(i) if direction == "down" else num_levels - 1 - int(i)
        return f"{part}.{direction}_blocks.{i}.{kind}rs.0.{tail}"
    return name


def is_diffusers_vae_linear(name: str) -> bool:
    """Whether diffusers stores this autoencoder attention projection as a Linear."""
    return bool(re.search(r"attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$", name))


LEGACY_VAE_ATTN = {"query.": "to_q.", "key.": "to_k.", "value.": "to_v.", "proj_attn.": "to_out.0."}


def modernise_vae_names(tensors: dict) -> dict:
    """Renames the attention tensors of diffusers checkpoints saved before diffusers 0.14."""
    out = {}
    for k, v in tensors.items():
        m = re.fullmatch(r"(.*attentions\.\d+\.)(query|key|value|proj_attn)(\..*)", k)
        out[LEGACY_VAE_ATTN[m.group(2) + "."][:-1].join([m.group(1), m.group(3)]) if m else k] = v
    return out
