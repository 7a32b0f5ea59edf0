"""diffusers UNet2DModel (self-attention only, the CompVis LDM pipelines' U-Net) import parity."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ldm_jax import interop
from ldm_jax.interop.diffusers_config import UnsupportedConfigError
from tests.interop import reference as ref
from tests.interop.reference import TOL, max_err, torch

UNET2D_CONFIGS = {
    # Attention at the second level and in the middle, 2 heads of 16 (attention_head_dim=16).
    "attn_heads": dict(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        attention_head_dim=16,
        norm_num_groups=8,
    ),
    # No attention in the levels (the mid block keeps one, single head), concat input channels
    # (super-resolution: 3 latent + 3 image), class labels, scale-shift norm, three levels.
    "plain_classes": dict(
        sample_size=8,
        in_channels=6,
        out_channels=3,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3,
        layers_per_block=2,
        attention_head_dim=None,
        num_class_embeds=4,
        resnet_time_scale_shift="scale_shift",
        attn_norm_num_groups=8,
        norm_num_groups=8,
    ),
}


def _make(name: str):
    torch.set_num_threads(2)
    return ref.randomise(ref.diffusers.UNet2DModel(**UNET2D_CONFIGS[name]), 0)


@pytest.mark.parametrize("name", sorted(UNET2D_CONFIGS))
def test_unet2d_matches_diffusers(name, tmp_path):
    cfg = UNET2D_CONFIGS[name]
    model = _make(name)
    model.save_pretrained(tmp_path / "src")
    unet, params = interop.load_diffusers_unet(str(tmp_path / "src"))
    assert unet.context_dim is None and not unet.use_spatial_transformer
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 8, cfg["in_channels"])).astype(np.float32)
    t = np.array([3, 917], np.int32)
    y = np.array([1, 3], np.int32) if cfg.get("num_class_embeds") else None
    got = jax.jit(lambda p, x, t, y: unet.apply({"params": p}, x, t, None, y=y))(params, x, t, y)
    with torch.no_grad():
        labels = None if y is None else torch.from_numpy(y).long()
        want = model(ref.nchw(x), torch.from_numpy(t).long(), class_labels=labels).sample
    err = max_err(got, ref.nhwc(want))
    print(f"unet2d {name}: max abs error {err:.2e}")
    assert got.shape == (2, 8, 8, cfg["out_channels"])
    assert err < TOL, err
    # Every tensor was used: a U-Net with the attention weights shifted gives other outputs.
    shifted = jax.tree_util.tree_map_with_path(
        lambda p, v: v + 0.1 if "qkv" in jax.tree_util.keystr(p) else v, params
    )
    moved = jax.jit(lambda p: unet.apply({"params": p}, x, t, None, y=y))(shifted)
    assert max_err(moved, ref.nhwc(want)) > 1e-3


def test_unet2d_refuses_what_it_cannot_express(tmp_path):
    cfg = dict(UNET2D_CONFIGS["plain_classes"], attn_norm_num_groups=None)
    ref.diffusers.UNet2DModel(**cfg).save_pretrained(tmp_path / "no_norm")
    with pytest.raises(UnsupportedConfigError, match="no GroupNorm"):
        interop.load_diffusers_unet(str(tmp_path / "no_norm"))
    cfg = dict(UNET2D_CONFIGS["attn_heads"], downsample_type="resnet", upsample_type="resnet")
    cfg.update(down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D"))
    ref.diffusers.UNet2DModel(**cfg).save_pretrained(tmp_path / "resnet")
    with pytest.raises(UnsupportedConfigError, match="downsample_type"):
        interop.load_diffusers_unet(str(tmp_path / "resnet"))
