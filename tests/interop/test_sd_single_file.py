"""Original Stable Diffusion single files -> workdirs (`convert sd-single-file`).

Tiny single files are built here in the original layout: a U-Net and KL autoencoder from a tiny
original YAML with random weights under their CompVis names (plus different `model_ema.*`
copies), and the text tower of the version, taken from its own library with random weights:
transformers' `CLIPTextModel` (v1, `cond_stage_model.transformer.*`) or open_clip's
`TextTransformer` (v2, `cond_stage_model.model.*`), plus the training buffers real files carry.
The workdir's prompt context is checked against those libraries' own forward passes (v1: the
last hidden state; v2: open_clip's penultimate block through ln_final, as the reference
`FrozenOpenCLIPEmbedder`) on the ids of transformers' `CLIPTokenizer`.
"""

from __future__ import annotations

import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from ldm_jax import convert
from ldm_jax.config import presets
from ldm_jax.config.model_config import model_config
from ldm_jax.interop import compvis_config as ccfg
from ldm_jax.interop import model_spec, sd_single_file
from ldm_jax.interop.diffusers_config import UnsupportedConfigError
from ldm_jax.interop.sd_single_file import load_sd_single_file, standard_modules
from ldm_jax.interop.tensors import WeightMismatchError, abstract_params
from ldm_jax.interop.torch_pickle import UnsafeCheckpointError
from ldm_jax.models import factory
from ldm_jax.workdir.reader import load_trained_ldm
from ldm_jax.workdir.sd_writer import write_sd_workdir
from ldm_jax.workdir.text_encoder import prompt_encoder
from tests.cli_runner import run_cli
from tests.clip_fixtures import (
    random_clip_text_model,
    random_open_clip_text_tower,
    tiny_clip_config,
    write_tiny_tokenizer,
)
from tests.interop.paper_checkpoints import _named
from tests.interop.reference import torch

safetensors_torch = pytest.importorskip("safetensors.torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-5
WIDTH, HEADS, LAYERS = 128, 2, 3  # heads of 64 channels, as every CLIP / OpenCLIP text tower
LATENT, IMAGE = 8, 16  # f = 2
PROMPT = "a photo of the red cat and dog"


def _yaml(version: str, in_channels: int = 4, parameterization: str | None = None) -> dict:
    """A tiny v1-inference.yaml / v2-inference(-v).yaml."""
    unet = dict(
        image_size=LATENT,
        in_channels=in_channels,
        out_channels=4,
        model_channels=32,
        attention_resolutions=[1],
        num_res_blocks=1,
        channel_mult=[1, 2],
        use_spatial_transformer=True,
        transformer_depth=1,
        context_dim=WIDTH,
        legacy=False,
    )
    if version == "v1":
        unet["num_heads"] = 4
        cond = {"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder"}
    else:
        unet.update(num_head_channels=8, use_linear_in_transformer=True)
        cond = {
            "target": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
            "params": {"freeze": True, "layer": "penultimate"},
        }
    inpainting = in_channels == 9
    params = {
        "linear_start": 0.00085,
        "linear_end": 0.012,
        "timesteps": 1000,
        "first_stage_key": "jpg",
        "cond_stage_key": "txt",
        "image_size": LATENT,
        "channels": 4,
        "cond_stage_trainable": False,
        "conditioning_key": "hybrid" if inpainting else "crossattn",
        "scale_factor": 0.18215,
        "use_ema": False,
        "unet_config": {
            "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
            "params": unet,
        },
        "first_stage_config": {
            "target": "ldm.models.autoencoder.AutoencoderKL",
            "params": {
                "embed_dim": 4,
                "monitor": "val/rec_loss",
                "ddconfig": dict(
                    double_z=True,
                    z_channels=4,
                    resolution=IMAGE,
                    in_channels=3,
                    out_ch=3,
                    ch=32,
                    ch_mult=[1, 2],
                    num_res_blocks=1,
                    attn_resolutions=[],
                    dropout=0.0,
                ),
                "lossconfig": {"target": "torch.nn.Identity"},
            },
        },
        "cond_stage_config": cond,
    }
    if parameterization is not None:
        params["parameterization"] = parameterization
    target = "LatentInpaintDiffusion" if inpainting else "LatentDiffusion"
    return {"model": {"target": f"ldm.models.diffusion.ddpm.{target}", "params": params}}


def _text_tower(version: str, seed: int):
    if version == "v1":
        kwargs = dict(
            tiny_clip_config(), hidden_size=WIDTH, num_attention_heads=HEADS, intermediate_size=256
        )
        kwargs["num_hidden_layers"] = LAYERS
        return random_clip_text_model(kwargs, seed)
    return random_open_clip_text_tower(width=WIDTH, layers=LAYERS, heads=HEADS, seed=seed)


def _random(module, seed: int, *inputs) -> dict:
    """Random parameters of `module` (shapes by `jax.eval_shape`; nothing is run eagerly):
    norm scales 1 + N(0, 0.05), everything else N(0, 0.05)."""
    abstract = abstract_params(module, *inputs)
    leaves, tree = jax.tree_util.tree_flatten_with_path(abstract)
    rng = np.random.default_rng(seed)
    out = []
    for path, leaf in leaves:
        noise = 0.05 * rng.standard_normal(leaf.shape).astype(np.float32)
        out.append(noise + (1.0 if path[-1].key == "scale" else 0.0))
    return jax.tree_util.tree_unflatten(tree, out)


def _sd_schedule_buffers() -> dict:
    """What LatentDiffusion registers (the reference's make_beta_schedule "linear")."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, 0)
    return {
        "betas": betas.float(),
        "alphas_cumprod": alphas_cumprod.float(),
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt().float(),
        "posterior_variance": betas.float(),
        "model_ema.decay": torch.tensor(0.9999),
        "model_ema.num_updates": torch.tensor(1000, dtype=torch.int32),
    }


def build_single_file(directory, version: str, in_channels: int = 4, seed: int = 0) -> dict:
    """Writes model.safetensors, model.ckpt, the YAML and tokenizer folders; returns the paths
    and the networks' source parameters (U-Net raw and EMA, first stage) and the text tower."""
    os.makedirs(directory, exist_ok=True)
    cfg = _yaml(version, in_channels, parameterization="v" if version == "v2" else None)
    p = cfg["model"]["params"]
    unet = ccfg.unet_from_yaml(p["unet_config"])
    first = ccfg.first_stage_from_yaml(p["first_stage_config"])
    unet_inputs = (
        jnp.zeros((1, LATENT, LATENT, in_channels)),
        jnp.zeros((1,), jnp.int32),
        jnp.zeros((1, 77, WIDTH)),
    )
    raw = _random(unet, seed, *unet_inputs)
    ema = _random(unet, seed + 10, *unet_inputs)
    vae = _random(first, seed + 1, jnp.zeros((1, IMAGE, IMAGE, 3)))
    sd = _named("model.diffusion_model.", raw)
    sd.update(
        {
            "model_ema." + k[len("model.") :].replace(".", ""): v
            for k, v in _named("model.diffusion_model.", ema).items()
        }
    )
    sd.update(_named("first_stage_model.", vae))
    tower = _text_tower(version, seed + 2)
    if version == "v1":  # transformers 4 names, as in the released files
        text = {
            "cond_stage_model.transformer."
            + ("" if k.startswith("text_model.") else "text_model.")
            + k: v
            for k, v in tower.state_dict().items()
        }
        position_ids = "cond_stage_model.transformer.text_model.embeddings.position_ids"
        text[position_ids] = torch.arange(77)[None]
    else:
        text = {f"cond_stage_model.model.{k}": v for k, v in tower.state_dict().items()}
        text["cond_stage_model.model.logit_scale"] = torch.tensor(4.6)
    sd.update(text)
    sd.update(_sd_schedule_buffers())
    sd = {k: v.detach().contiguous() for k, v in sd.items()}
    paths = {
        "safetensors": str(directory / "model.safetensors"),
        "ckpt": str(directory / "model.ckpt"),
        "yaml": str(directory / "inference.yaml"),
        "tokenizer": str(write_tiny_tokenizer(directory / "tokenizer")),  # pads with eos
        "tokenizer_bang": str(write_tiny_tokenizer(directory / "tokenizer_bang", pad_token="!")),
    }
    safetensors_torch.save_file(sd, paths["safetensors"])
    torch.save({"state_dict": sd, "global_step": 7, "epoch": 1}, paths["ckpt"])
    with open(paths["yaml"], "w") as f:
        yaml.safe_dump(cfg, f)
    return dict(paths, raw=raw, ema=ema, vae=vae, tower=tower, state_dict=sd)


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    return build_single_file(tmp_path_factory.mktemp("sd_v1"), "v1")


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    return build_single_file(tmp_path_factory.mktemp("sd_v2"), "v2")


def _convert(*args: str) -> None:
    """convert.main in this process (its JSON line goes to stdout)."""
    assert convert.main(["sd-single-file", *args]) == 0


def _convert_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as e:
        convert.main(["sd-single-file", *args])
    message = str(e.value.code)
    assert "\n" not in message and message.startswith("python -m ldm_jax.convert: error: ")
    return message


def _flat(tree) -> dict:
    return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))


def _assert_same_tree(got, want) -> None:
    got, want = _flat(got), _flat(want)
    assert set(got) == set(want)
    for path, value in want.items():
        np.testing.assert_array_equal(np.asarray(got[path]), np.asarray(value), err_msg=str(path))


def _ids(tokenizer_dir: str, texts: list[str]) -> np.ndarray:
    """transformers' CLIPTokenizer ids, padded to 77 as the SD pipelines pad."""
    tok = transformers.CLIPTokenizer.from_pretrained(tokenizer_dir)
    return np.asarray(
        tok(texts, padding="max_length", max_length=77, truncation=True).input_ids, np.int64
    )


def test_v1_workdir_holds_the_ema_unet_and_clip_of_the_file(v1, tmp_path, capsys):
    out = str(tmp_path / "wd")
    _convert(
        f"--ckpt={v1['safetensors']}",
        f"--tokenizer={v1['tokenizer']}",
        f"--config={v1['yaml']}",
        f"--out={out}",
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == {"out": out, "source": "sd-single-file"}
    trained = load_trained_ldm(out)
    config = trained.config
    assert config.model.cond_stage.kind == "frozen_clip"
    assert config.model.conditioning_key == "crossattn"
    assert config.diffusion.prediction_type == "epsilon"
    assert (config.diffusion.beta_start, config.diffusion.beta_end) == (0.00085, 0.012)
    assert trained.scale_factor == pytest.approx(0.18215)
    _assert_same_tree(trained.ldm_params["diffusion_model"], v1["ema"])
    _assert_same_tree(trained.ae_params, v1["vae"])

    encode = prompt_encoder(out, model_config(config)["cond_stage"])
    texts = [PROMPT, ""]
    got = np.asarray(encode(texts))
    ids = _ids(v1["tokenizer"], texts)
    with torch.no_grad():
        want = v1["tower"](torch.from_numpy(ids)).last_hidden_state.numpy()
    err = float(np.abs(got - want).max())
    assert got.shape == (2, 77, WIDTH) and err <= TOL, err


def test_ckpt_reads_like_safetensors_and_no_ema_takes_the_raw_unet(v1):
    kw = dict(config_yaml=v1["yaml"])
    from_ckpt, kind = load_sd_single_file(v1["ckpt"], v1["tokenizer"], **kw)
    raw, _ = load_sd_single_file(v1["safetensors"], v1["tokenizer"], use_ema=False, **kw)
    assert kind == "frozen_clip" and from_ckpt.pipeline == "StableDiffusionPipeline"
    _assert_same_tree(from_ckpt.unet_params, v1["ema"])
    _assert_same_tree(raw.unet_params, v1["raw"])
    _assert_same_tree(from_ckpt.text_params, raw.text_params)
    assert from_ckpt.scheduler_config["prediction_type"] == "epsilon"
    assert from_ckpt.scheduler_config["steps_offset"] == 1
    assert from_ckpt.scheduler_config["timestep_spacing"] == "leading"
    assert from_ckpt.unet_config["sample_size"] == LATENT  # the YAML's image_size


def test_v2_workdir_takes_openclips_penultimate_layer_and_pads_with_bang(v2, tmp_path, capsys):
    common = [f"--ckpt={v2['safetensors']}", f"--tokenizer={v2['tokenizer']}"]
    message = _convert_error(capsys, *common, f"--out={tmp_path / 'no'}")
    assert "--prediction_type v_prediction for a 768-v model" in message
    assert "epsilon for a 512-base or inpainting model" in message
    message = _convert_error(
        capsys, *common, f"--config={v2['yaml']}", "--prediction_type=epsilon", "--out=no"
    )
    assert "contradicts the YAML's parameterization (v_prediction)" in message
    assert not (tmp_path / "no").exists()

    out = str(tmp_path / "wd")
    # A v1-style tokenizer folder (pads with <|endoftext|>): the workdir pads with "!" (id 0).
    _convert(*common, f"--config={v2['yaml']}", "--prediction_type=v_prediction", f"--out={out}")
    trained = load_trained_ldm(out)
    config = trained.config
    cond = model_config(config)["cond_stage"]
    assert (cond["kind"], cond["layer"]) == ("frozen_openclip", "penultimate")
    assert config.diffusion.prediction_type == "v_prediction"
    _assert_same_tree(trained.ldm_params["diffusion_model"], v2["ema"])
    with open(os.path.join(out, cond["tokenizer"], "special_tokens_map.json")) as f:
        pad = json.load(f)["pad_token"]
    assert (pad["content"] if isinstance(pad, dict) else pad) == "!"

    texts = [PROMPT, "dog"]
    got = np.asarray(prompt_encoder(out, cond)(texts))
    ids = _ids(v2["tokenizer_bang"], texts)
    assert (ids[:, -1] == 0).all()  # open_clip pads with 0
    with torch.no_grad():
        want = v2["tower"].forward_intermediates(
            torch.from_numpy(ids),
            indices=[LAYERS - 2],
            normalize_intermediates=True,
            intermediates_only=True,
            output_fmt="NLC",
        )["text_intermediates"][0]
    err = float(np.abs(got - want.numpy()).max())
    assert got.shape == (2, 77, WIDTH) and err <= TOL, err


def test_inpainting_file_gives_hybrid_conditioning(tmp_path):
    files = build_single_file(tmp_path / "src", "v1", in_channels=9, seed=3)
    parts, kind = load_sd_single_file(files["ckpt"], files["tokenizer"], config_yaml=files["yaml"])
    assert parts.pipeline == "StableDiffusionInpaintPipeline"
    config = write_sd_workdir(parts, str(tmp_path / "wd"), {"source": "t"}, cond_kind=kind)
    assert config.model.conditioning_key == "hybrid"
    assert config.model.unet.in_channels == 9
    _assert_same_tree(parts.unet_params, files["ema"])


def test_a_file_unlike_the_standard_model_names_tensors_and_asks_for_config(v1, capsys):
    message = _convert_error(
        capsys, f"--ckpt={v1['safetensors']}", f"--tokenizer={v1['tokenizer']}", "--out=no"
    )
    assert "does not fit the standard SD v1 architecture" in message
    assert "--config" in message and "model.diffusion_model." in message
    with pytest.raises(WeightMismatchError, match="input_blocks"):
        load_sd_single_file(v1["safetensors"], v1["tokenizer"])


def _save(path, tensors: dict) -> str:
    safetensors_torch.save_file({k: torch.zeros(v) for k, v in tensors.items()}, str(path))
    return str(path)


def test_other_models_are_refused_in_one_line(v1, tmp_path, capsys):
    tok = f"--tokenizer={v1['tokenizer']}"
    sdxl = _save(
        tmp_path / "sdxl.safetensors",
        {
            "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (768,),
            "conditioner.embedders.1.model.ln_final.weight": (1280,),
        },
    )
    assert "SDXL" in _convert_error(capsys, f"--ckpt={sdxl}", tok, "--out=no")
    vae = _save(tmp_path / "vae.safetensors", {"encoder.conv_in.weight": (128, 3, 3, 3)})
    message = _convert_error(capsys, f"--ckpt={vae}", tok, "--out=no")
    assert "not an original Stable Diffusion checkpoint" in message and "encoder.conv_in" in message
    depth = dict(v1["state_dict"])
    depth["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(32, 5, 3, 3)
    path = str(tmp_path / "depth.safetensors")
    safetensors_torch.save_file(depth, path)
    with pytest.raises(UnsupportedConfigError, match=r"\(32, 5, 3, 3\)"):
        load_sd_single_file(path, v1["tokenizer"], config_yaml=v1["yaml"])
    message = _convert_error(capsys, f"--ckpt={v1['ckpt']}", "--tokenizer=/nonexistent", "--out=n")
    assert "--tokenizer /nonexistent: no such folder" in message


def test_a_schedule_other_than_the_files_betas_is_refused(v1, tmp_path):
    sd = dict(v1["state_dict"])
    sd["betas"] = torch.linspace(1e-4, 2e-2, 1000)
    path = str(tmp_path / "other_schedule.safetensors")
    safetensors_torch.save_file(sd, path)
    with pytest.raises(UnsupportedConfigError, match="not the scaled_linear schedule"):
        load_sd_single_file(path, v1["tokenizer"], config_yaml=v1["yaml"])


class _Payload:
    """Unpickling this with the standard pickle would run a shell command."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_ckpt_that_pickles_os_system_is_refused_and_nothing_runs(v1, tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = str(tmp_path / "evil.ckpt")
    small = {k: v for k, v in v1["state_dict"].items() if k.startswith("first_stage_model.")}
    torch.save({"state_dict": small, "callbacks": _Payload(str(marker))}, path)
    out = tmp_path / "wd"
    message = _convert_error(
        capsys, f"--ckpt={path}", f"--tokenizer={v1['tokenizer']}", f"--out={out}"
    )
    assert "system" in message
    with pytest.raises(UnsafeCheckpointError):
        load_sd_single_file(path, v1["tokenizer"], allow_placeholders=False)
    assert not marker.exists() and not out.exists()


@pytest.mark.slow
def test_the_converted_workdir_samples(v1, tmp_path):
    out = str(tmp_path / "wd")
    _convert(
        f"--ckpt={v1['ckpt']}",
        f"--tokenizer={v1['tokenizer']}",
        f"--config={v1['yaml']}",
        f"--out={out}",
    )
    png = str(tmp_path / "x.png")
    stdout = run_cli(
        "ldm_jax.sample",
        f"--workdir={out}",
        "--task=text2img",
        "--prompt=x",
        "--num=1",
        "--steps=2",
        f"--out={png}",
    )
    line = json.loads(stdout.strip().splitlines()[-1])
    assert line["task"] == "text2img" and os.path.isfile(png)


@pytest.mark.parametrize("version, preset", [("v1", "sd_v1"), ("v2", "sd_v2")])
def test_the_standard_architecture_is_the_sd_presets(version, preset):
    for in_channels in (4, 9):
        unet, first = standard_modules(version, in_channels)
        want = factory.build_unet(presets.unet(preset, in_channels=in_channels))
        model_spec.same_module(want, unet, "U-Net")  # raises naming any difference
        model_spec.same_module(factory.build_first_stage(presets.first_stage("kl_f8")), first, "AE")
    sd = presets.diffusion("sd")
    assert (sd["beta_start"], sd["beta_end"], sd["num_timesteps"], sd["scale_factor"]) == (
        sd_single_file.LINEAR_START,
        sd_single_file.LINEAR_END,
        sd_single_file.TIMESTEPS,
        sd_single_file.SCALE_FACTOR,
    )


def test_v1_pads_with_endoftext_given_a_bang_padded_folder(v1):
    tokenizer = sd_single_file.load_tokenizer(v1["tokenizer_bang"], "v1")
    texts = ["the cat!", "red dog ! photo"]
    assert tokenizer.pad_id == tokenizer.eos_id
    # "!" is a plain word again, as in the eos-padded folder that v1's CLIPTokenizer reads.
    np.testing.assert_array_equal(tokenizer(texts), _ids(v1["tokenizer"], texts))
    v2_style = sd_single_file.load_tokenizer(v1["tokenizer"], "v2")
    assert v2_style.pad_id == 0 and v2_style.pad_token == "!"
