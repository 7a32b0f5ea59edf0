"""The paper's checkpoint format: a real torch.save `.ckpt` built from diffusers weights."""

from __future__ import annotations

import collections
import subprocess
import sys

import jax
import numpy as np
import pytest
import yaml
from PIL import Image

from ldm_jax import interop
from ldm_jax.interop.torch_pickle import UnsafeCheckpointError
from tests.interop import compvis_layout as layout
from tests.interop import reference as ref
from tests.interop.reference import TOL, max_err, torch

N_CLASSES = 7  # the paper's ClassEmbedder n_classes (the last one is the null class)


# The paper's networks hard-code GroupNorm(32), so these use 32 groups.
UNET = dict(ref.UNET_CONFIGS["conv_proj_heads"], norm_num_groups=32)
VAES = {
    "kl": dict(ref.VAE_CONFIGS["kl_f4"], block_out_channels=(32, 32, 32), norm_num_groups=32),
    "vq": dict(ref.VQ_CONFIGS["vq_f4"], block_out_channels=(32, 32, 32), norm_num_groups=32),
}


class LightningCallbackStandIn:
    """Something a Lightning checkpoint pickles besides tensors."""

    def __init__(self):
        self.best = 1.0


def _yaml(path, first_stage: str, vae_cfg: dict) -> None:
    u = UNET
    ch = vae_cfg["block_out_channels"][0]
    ddconfig = dict(
        double_z=first_stage == "kl",
        z_channels=vae_cfg["latent_channels"],
        resolution=16,
        in_channels=3,
        out_ch=3,
        ch=ch,
        ch_mult=[c // ch for c in vae_cfg["block_out_channels"]],
        num_res_blocks=vae_cfg["layers_per_block"],
        attn_resolutions=[],
        dropout=0.0,
    )
    fs_params = {
        "embed_dim": vae_cfg["latent_channels"],
        "ddconfig": ddconfig,
        "lossconfig": {"target": "torch.nn.Identity"},
    }
    if first_stage == "vq":
        fs_params["n_embed"] = vae_cfg["num_vq_embeddings"]
    cfg = {
        "model": {
            "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
            "params": {
                "linear_start": 0.0015,
                "linear_end": 0.0195,
                "timesteps": 1000,
                "conditioning_key": "crossattn",
                "scale_factor": 0.5,
                "image_size": 4,
                "channels": 4,
                "unet_config": {
                    "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                    "params": {
                        "image_size": 4,
                        "in_channels": 4,
                        "out_channels": 4,
                        "model_channels": 32,
                        "attention_resolutions": [1],
                        "num_res_blocks": 1,
                        "channel_mult": [1, 2],
                        "num_heads": 2,
                        "use_spatial_transformer": True,
                        "transformer_depth": 1,
                        "context_dim": u["cross_attention_dim"],
                        "legacy": False,
                    },
                },
                "first_stage_config": {
                    "target": "ldm.models.autoencoder."
                    + ("AutoencoderKL" if first_stage == "kl" else "VQModelInterface"),
                    "params": fs_params,
                },
                "cond_stage_config": {
                    "target": "ldm.modules.encoders.modules.ClassEmbedder",
                    "params": {
                        "embed_dim": u["cross_attention_dim"],
                        "n_classes": N_CLASSES,
                        "key": "class_label",
                    },
                },
            },
        }
    }
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)


def _checkpoint(tmp_path, first_stage: str, callbacks: bool = False):
    """Writes config.yaml and model.ckpt; returns (paths, diffusers unet, vae, class table)."""
    torch.set_num_threads(2)
    unet = ref.randomise(ref.diffusers.UNet2DConditionModel(**UNET), 0)
    vae_cls = ref.diffusers.AutoencoderKL if first_stage == "kl" else ref.diffusers.VQModel
    vae = ref.randomise(vae_cls(**VAES[first_stage]), 1)
    table = torch.randn(N_CLASSES, UNET["cross_attention_dim"])
    up_attn = [t.startswith("CrossAttn") for t in UNET["up_block_types"]]
    paper_unet = layout.unet_to_paper(unet.state_dict(), 2, 1, up_attn)
    sd = collections.OrderedDict()
    for k, v in paper_unet.items():
        sd["model.diffusion_model." + k] = 0.5 * v  # the non-EMA weights differ
        sd["model_ema." + ("diffusion_model." + k).replace(".", "")] = v
    sd["model_ema.decay"] = torch.tensor(0.9999)
    sd["model_ema.num_updates"] = torch.tensor(10, dtype=torch.int32)
    fs = VAES[first_stage]
    for k, v in layout.vae_to_paper(vae.state_dict(), 3, fs["layers_per_block"]).items():
        sd["first_stage_model." + k] = v
    sd["first_stage_model.loss.logvar"] = torch.zeros(())  # the training loss, ignored
    sd["cond_stage_model.embedding.weight"] = table
    betas = torch.linspace(0.0015**0.5, 0.0195**0.5, 1000, dtype=torch.float64) ** 2
    sd["betas"] = betas
    sd["alphas_cumprod"] = torch.cumprod(1 - betas, 0)
    sd["scale_factor"] = torch.tensor(0.25)
    ckpt = {"state_dict": sd, "global_step": 10, "epoch": 1}
    if callbacks:
        ckpt["callbacks"] = {"ModelCheckpoint": LightningCallbackStandIn()}
    torch.save(ckpt, tmp_path / "model.ckpt")
    _yaml(tmp_path / "config.yaml", first_stage, fs)
    return str(tmp_path / "config.yaml"), str(tmp_path / "model.ckpt"), unet, vae, table


@pytest.mark.parametrize("first_stage", ["kl", "vq"])
def test_load_compvis_matches_diffusers(tmp_path, first_stage):
    cfg, ckpt, unet, vae, table = _checkpoint(tmp_path, first_stage)
    ldm = interop.load_compvis(cfg, ckpt)
    assert ldm.scale_factor == 0.25  # the checkpoint's buffer wins over the YAML
    assert ldm.schedule.num_timesteps == 1000
    np.testing.assert_allclose(
        ldm.schedule.betas, np.linspace(0.0015**0.5, 0.0195**0.5, 1000) ** 2, rtol=1e-5
    )
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
    t = np.array([5, 600], np.int32)
    labels = np.array([0, N_CLASSES - 1], np.int32)
    eps = jax.jit(ldm.eps)(z, t, labels)
    context = table[torch.from_numpy(labels).long()][:, None].numpy()
    expected = ref.torch_unet_eps(unet, {"x": z, "t": t, "context": context})
    err = max_err(eps, expected)

    x = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    latents = jax.jit(ldm.encode)(x)
    rec = jax.jit(ldm.decode)(latents)
    with torch.no_grad():
        if first_stage == "kl":
            z_ref = vae.encode(ref.nchw(x)).latent_dist.mean
        else:
            z_ref = vae.encode(ref.nchw(x)).latents
        rec_ref = vae.decode(z_ref).sample
    err_enc = max_err(np.asarray(latents) / 0.25, ref.nhwc(z_ref))
    err_dec = max_err(rec, ref.nhwc(rec_ref))
    print(f"compvis {first_stage}: eps {err:.2e} encode {err_enc:.2e} decode {err_dec:.2e}")
    assert max(err, err_enc, err_dec) < TOL

    # Without EMA the (shifted) raw weights are used.
    raw = interop.load_compvis(cfg, ckpt, use_ema=False)
    assert max_err(jax.jit(raw.eps)(z, t, labels), expected) > 1e-2


def test_lightning_extras_need_placeholders_and_run_nothing(tmp_path):
    cfg, ckpt, *_ = _checkpoint(tmp_path, "kl", callbacks=True)
    with pytest.raises(UnsafeCheckpointError, match="LightningCallbackStandIn"):
        interop.load_compvis(cfg, ckpt)
    ldm = interop.load_compvis(cfg, ckpt, allow_placeholders=True)
    assert ldm.cond_stage is not None


def test_load_compvis_names_a_missing_tensor(tmp_path):
    cfg, ckpt, *_ = _checkpoint(tmp_path, "kl")
    sd = torch.load(ckpt)["state_dict"]
    del sd["first_stage_model.decoder.conv_out.weight"]
    sd["first_stage_model.decoder.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": sd}, tmp_path / "broken.ckpt")
    with pytest.raises(interop.WeightMismatchError) as e:
        interop.load_compvis(cfg, str(tmp_path / "broken.ckpt"))
    assert "decoder.conv_out.weight" in str(e.value) and "decoder.extra.weight" in str(e.value)


def test_convert_cli_writes_a_sampleable_workdir(tmp_path):
    from ldm_jax import convert
    from ldm_jax.config import builders
    from ldm_jax.workdir.reader import load_trained_ldm

    cfg, ckpt, *_ = _checkpoint(tmp_path, "kl")
    out = str(tmp_path / "workdir")
    assert convert.main(["compvis", "--config", cfg, "--ckpt", ckpt, "--out", out]) == 0
    trained = load_trained_ldm(out)
    assert trained.scale_factor == 0.25
    ldm = interop.load_compvis(cfg, ckpt)
    denoiser = builders.build_denoiser(trained.config)
    z = np.random.default_rng(0).standard_normal((2, 8, 8, 4)).astype(np.float32)
    t, labels = np.array([5, 600], np.int32), np.array([1, 2], np.int32)
    got = jax.jit(lambda p, *a: denoiser.apply({"params": p}, *a))(trained.ldm_params, z, t, labels)
    assert max_err(got, jax.jit(ldm.eps)(z, t, labels)) < TOL
    ae = builders.build_autoencoder(trained.config)
    x = np.zeros((1, 16, 16, 3), np.float32)
    mean = jax.jit(lambda p, x: ae.apply({"params": p}, x, method=ae.encode).mean)
    assert max_err(0.25 * mean(trained.ae_params, x), jax.jit(ldm.encode)(x)) < TOL
    # The sample CLI runs on the converted workdir as on a trained one.
    png = tmp_path / "converted.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ldm_jax.sample",
            f"--workdir={out}",
            "--class=1",
            "--num=4",
            "--steps=2",
            f"--out={png}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    grid = np.asarray(Image.open(png))
    assert grid.shape[:2] == (2 * 18 + 2, 2 * 18 + 2)  # 2x2 tiles of 16x16, 2 px padding
