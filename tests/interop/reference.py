"""Small randomly initialised diffusers models (PyTorch, test-only references) and helpers."""

from __future__ import annotations

from typing import Any

import diffusers  # noqa: E402  (test-only dependency, pinned in setup.cfg [test])
import numpy as np
import torch  # noqa: E402

TOL = 1e-4

UNET_CONFIGS: dict[str, dict[str, Any]] = {
    # Conv projections, constant head count, cross-attention on the first level only.
    "conv_proj_heads": dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=8,
    ),
    # Linear projections, per-level head counts with a constant head width (SD 2 style),
    # class embeddings, scale-shift norm, two transformer layers, three levels.
    "linear_proj_classes": dict(
        sample_size=8,
        in_channels=5,
        out_channels=3,
        block_out_channels=(16, 32, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=2,
        cross_attention_dim=24,
        attention_head_dim=(2, 4, 4),
        use_linear_projection=True,
        num_class_embeds=5,
        resnet_time_scale_shift="scale_shift",
        transformer_layers_per_block=2,
        norm_num_groups=8,
    ),
}

VAE_CONFIGS: dict[str, dict[str, Any]] = {
    "kl_f4": dict(
        block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    ),
    "kl_f8_attn": dict(
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16, 16, 32),
        down_block_types=("DownEncoderBlock2D",) * 3 + ("AttnDownEncoderBlock2D",),
        up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 3,
        layers_per_block=2,
        latent_channels=3,
        norm_num_groups=8,
        sample_size=16,
    ),
}

VQ_CONFIGS: dict[str, dict[str, Any]] = {
    "vq_f4": dict(
        block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        latent_channels=3,
        num_vq_embeddings=16,
        norm_num_groups=8,
        sample_size=16,
    ),
    "vq_f8_embed_dim": dict(
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        vq_embed_dim=2,
        num_vq_embeddings=32,
        norm_num_groups=8,
        sample_size=16,
    ),
}


def randomise(model: Any, seed: int = 0) -> Any:
    """Adds noise to every parameter so that no zero-initialised layer hides a mapping bug."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def make_unet(name: str, seed: int = 0) -> Any:
    torch.set_num_threads(2)
    return randomise(diffusers.UNet2DConditionModel(**UNET_CONFIGS[name]), seed)


def make_vae(name: str, seed: int = 0) -> Any:
    torch.set_num_threads(2)
    if name in VQ_CONFIGS:
        return randomise(diffusers.VQModel(**VQ_CONFIGS[name]), seed)
    return randomise(diffusers.AutoencoderKL(**VAE_CONFIGS[name]), seed)


def nchw(x: np.ndarray) -> Any:
    """NHWC numpy -> NCHW torch."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


def nhwc(t: Any) -> np.ndarray:
    """NCHW torch -> NHWC numpy."""
    return t.detach().numpy().transpose(0, 2, 3, 1)


def max_err(a: Any, b: Any) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def unet_inputs(cfg: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """NHWC latents, timesteps, context (and labels) for a UNET_CONFIGS entry."""
    rng = np.random.default_rng(seed)
    s = cfg["sample_size"]
    out = {
        "x": rng.standard_normal((2, s, s, cfg["in_channels"])).astype(np.float32),
        "t": np.array([3, 917], np.int32),
        "context": rng.standard_normal((2, 5, cfg["cross_attention_dim"])).astype(np.float32),
    }
    if cfg.get("num_class_embeds"):
        out["y"] = np.array([1, cfg["num_class_embeds"] - 1], np.int32)
    return out


def torch_unet_output(model: Any, inputs: dict[str, np.ndarray], x: Any) -> Any:
    """The diffusers U-Net's NCHW output tensor for the NCHW tensor `x` and the other `inputs`."""
    labels = torch.from_numpy(inputs["y"]).long() if "y" in inputs else None
    return model(
        x,
        torch.from_numpy(inputs["t"]).long(),
        encoder_hidden_states=torch.from_numpy(inputs["context"]),
        class_labels=labels,
    ).sample


def torch_unet_eps(model: Any, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The diffusers U-Net's output for NHWC `inputs`, as NHWC numpy."""
    with torch.no_grad():
        return nhwc(torch_unet_output(model, inputs, nchw(inputs["x"])))
