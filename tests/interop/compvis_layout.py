"""Test-side: diffusers state dicts -> the paper's checkpoint names, written independently of
`ldm_jax.interop` from the renaming tables of diffusers' SD conversion scripts."""

from __future__ import annotations

from typing import Any

_UNET_TOP = [
    ("time_embed.0.", "time_embedding.linear_1."),
    ("time_embed.2.", "time_embedding.linear_2."),
    ("input_blocks.0.0.", "conv_in."),
    ("out.0.", "conv_norm_out."),
    ("out.2.", "conv_out."),
    ("label_emb.", "class_embedding."),
]
_UNET_RESNET = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
]


def unet_prefix_table(levels: int, nrb: int, up_attention: list[bool]) -> list[tuple[str, str]]:
    """(paper prefix, diffusers prefix) pairs for the U-Net's blocks."""
    n, table = nrb + 1, []
    for i in range(levels):
        for j in range(nrb):
            table.append((f"input_blocks.{n * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            table.append((f"input_blocks.{n * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(n):
            table.append((f"output_blocks.{n * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            table.append((f"output_blocks.{n * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < levels - 1:
            table.append(
                (f"input_blocks.{n * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv.")
            )
            sub = 2 if up_attention[i] else 1
            table.append((f"output_blocks.{n * i + nrb}.{sub}.", f"up_blocks.{i}.upsamplers.0."))
    table.append(("middle_block.1.", "mid_block.attentions.0."))
    for j in range(2):
        table.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    return table


def unet_to_paper(sd: dict[str, Any], levels: int, nrb: int, up_attention: list[bool]) -> dict:
    table = unet_prefix_table(levels, nrb, up_attention)
    out = {}
    for name, v in sd.items():
        new = name
        for paper, diff in _UNET_TOP:
            if new.startswith(diff):
                new = paper + new[len(diff) :]
        if "resnets" in new:
            for paper, diff in _UNET_RESNET:
                new = new.replace(f".{diff}.", f".{paper}.")
        for paper, diff in table:
            if new.startswith(diff):
                new = paper + new[len(diff) :]
                break
        out[new] = v
    return out


def vae_to_paper(sd: dict[str, Any], levels: int, nrb: int) -> dict:
    """diffusers AutoencoderKL/VQModel names -> the paper's, Linear attention -> 1x1 conv."""
    table = [
        ("nin_shortcut", "conv_shortcut"),
        ("norm_out", "conv_norm_out"),
        ("mid.attn_1.", "mid_block.attentions.0."),
    ]
    for i in range(levels):
        for j in range(nrb):
            table.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        if i < levels - 1:
            table.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            table.append((f"up.{levels - 1 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
        for j in range(nrb + 1):
            table.append(
                (f"decoder.up.{levels - 1 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}.")
            )
    for i in range(2):
        table.append((f"mid.block_{i + 1}.", f"mid_block.resnets.{i}."))
    attn = [
        ("norm.", "group_norm."),
        ("q.", "to_q."),
        ("k.", "to_k."),
        ("v.", "to_v."),
        ("proj_out.", "to_out.0."),
    ]
    out = {}
    for name, v in sd.items():
        new = name
        for paper, diff in table:
            new = new.replace(diff, paper)
        if "attn_1" in new:
            for paper, diff in attn:
                new = new.replace(f"attn_1.{diff}", f"attn_1.{paper}")
            if new.endswith("weight") and v.ndim == 2:
                v = v[:, :, None, None]
        out[new] = v
    return out
