"""Stable Diffusion end to end against diffusers: a whole tiny random pipeline converted, sampled
and exported; the same prompt, latents and scheduler give the same images (<= 1e-4)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.config.model_config import model_config
from ldm_jax.interop.diffusers_config import UnsupportedConfigError
from ldm_jax.interop.sd_pipeline import load_sd_folder
from ldm_jax.sampling.generate import make_sampler
from ldm_jax.sampling.tasks import SampleInputError, SampleRequest, run
from ldm_jax.workdir.reader import load_trained_ldm
from ldm_jax.workdir.sd_export import export_sd_pipeline
from ldm_jax.workdir.text_encoder import prompt_encoder
from tests.cli_runner import run_cli
from tests.sd_fixtures import LATENT, save_tiny_sd_folder, tiny_sd_workdir

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

TOL = 1e-4
STEPS = 4
PROMPT = "a red heart, shiny!"


def _latents(batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, LATENT, LATENT, 4), np.float32)


def _diffusers_images(pipe, latents, **kwargs) -> np.ndarray:
    """The pipeline's images [B, H, W, C] in [0, 1] from NHWC initial latents."""
    torch.set_num_threads(2)
    with torch.no_grad():
        out = pipe(
            prompt=[PROMPT] * len(latents),
            latents=torch.from_numpy(latents.transpose(0, 3, 1, 2).copy()),
            num_inference_steps=STEPS,
            output_type="np",
            **kwargs,
        )
    return np.asarray(out.images, np.float32)


def _our_images(workdir, latents, guidance, negative="", rescale=None) -> np.ndarray:
    trained = load_trained_ldm(workdir)
    config = trained.config
    encode = prompt_encoder(workdir, model_config(config)["cond_stage"])
    sample = make_sampler(config, "ddim", STEPS, timestep_spacing="leading", steps_offset=1)
    extra = {} if rescale is None else {"guidance_rescale": jnp.float32(rescale)}
    images = sample(
        trained.ae_params,
        trained.ldm_params,
        encode([PROMPT] * len(latents)),
        encode([negative]),
        jax.random.PRNGKey(0),
        jnp.float32(guidance),
        jnp.float32(0.0),
        jnp.float32(trained.scale_factor),
        shape=latents.shape,
        noise=latents,
        **extra,
    )
    return (np.asarray(images) + 1.0) / 2.0


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_text2img_matches_diffusers_pipeline(prediction_type):
    workdir = tiny_sd_workdir(prediction_type=prediction_type)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(f"{workdir}/../src")
    latents = _latents()
    want = _diffusers_images(pipe, latents, guidance_scale=7.5)
    got = _our_images(workdir, latents, 7.5)
    err = float(np.max(np.abs(got - want)))
    print(f"text2img {prediction_type}: max abs error {err:.2e}")
    assert got.shape == want.shape == (2, 16, 16, 3)
    assert err < TOL
    assert float(np.std(want)) > 0.01  # not a constant image that anything would match


def test_negative_prompt_and_guidance_rescale_match_diffusers():
    workdir = tiny_sd_workdir()
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(f"{workdir}/../src")
    latents = _latents(1, seed=3)
    kwargs = dict(guidance_scale=5.0, negative_prompt=["blurry"], guidance_rescale=0.7)
    want = _diffusers_images(pipe, latents, **kwargs)
    got = _our_images(workdir, latents, 5.0, negative="blurry", rescale=0.7)
    plain = _our_images(workdir, latents, 5.0)
    err = float(np.max(np.abs(got - want)))
    print(f"negative prompt + guidance rescale: max abs error {err:.2e}")
    assert err < TOL
    assert float(np.max(np.abs(plain - want))) > 10 * TOL  # both options change the images


def test_export_gives_a_folder_diffusers_loads_with_the_same_images(tmp_path):
    workdir = tiny_sd_workdir()
    out = tmp_path / "exported"
    result = export_sd_pipeline(workdir, str(out))
    assert result["pipeline"] == "StableDiffusionPipeline"
    source = diffusers.StableDiffusionPipeline.from_pretrained(f"{workdir}/../src")
    back = diffusers.StableDiffusionPipeline.from_pretrained(str(out))
    for part in ("unet", "vae", "text_encoder"):
        want, have = getattr(source, part).state_dict(), getattr(back, part).state_dict()
        assert sorted(want) == sorted(have), part
        for k in want:
            assert float((want[k] - have[k]).abs().max()) == 0.0, f"{part}.{k}"
    assert back.vae.config.scaling_factor == source.vae.config.scaling_factor
    assert back.tokenizer("a b c").input_ids == source.tokenizer("a b c").input_ids
    latents = _latents(1, seed=5)
    want = _diffusers_images(source, latents, guidance_scale=3.0)
    got = _diffusers_images(back, latents, guidance_scale=3.0)
    assert float(np.max(np.abs(got - want))) < 1e-6


def test_clip_skip_exports_as_a_shorter_text_encoder(tmp_path):
    workdir = tiny_sd_workdir()
    skipped = tmp_path / "skip"
    shutil.copytree(workdir, skipped)
    config = json.loads((skipped / "config.json").read_text())
    config["model"]["cond_stage"]["clip_skip"] = 1
    (skipped / "config.json").write_text(json.dumps(config))
    export_sd_pipeline(str(skipped), str(tmp_path / "out"))
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(f"{workdir}/../src")
    back = diffusers.StableDiffusionPipeline.from_pretrained(str(tmp_path / "out"))
    assert (
        back.text_encoder.config.num_hidden_layers == pipe.text_encoder.config.num_hidden_layers - 1
    )
    ids = pipe.tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True)
    ids = torch.tensor([ids.input_ids])
    with torch.no_grad():  # diffusers' clip_skip=1: hidden_states[-2], then the final norm
        hidden = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        want = pipe.text_encoder.final_layer_norm(hidden)
        have = back.text_encoder(ids).last_hidden_state
    ours = prompt_encoder(str(skipped), config["model"]["cond_stage"])([PROMPT])
    assert float((want - have).abs().max()) < 1e-5
    assert float(np.max(np.abs(ours - want.numpy()))) < 1e-5


def test_sampling_requests_on_a_stable_diffusion_workdir(tmp_path):
    from PIL import Image

    trained = load_trained_ldm(tiny_sd_workdir())
    assert trained.config.sample.guidance_scale == 7.5
    assert trained.config.sample.timestep_spacing == "leading"
    result = run(trained, SampleRequest(task="text2img", prompt="a cat", num=2, steps=2))
    assert result.images.shape == (2, 16, 16, 3)
    assert result.info["task"] == "text2img" and result.info["prompt"] == "a cat"
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8)).save(image)
    edit = SampleRequest(task="img2img", prompt="a dog", num=1, steps=4, image=str(image))
    near = run(trained, dataclasses.replace(edit, strength=0.25))
    far = run(trained, dataclasses.replace(edit, strength=1.0))
    assert near.info["task"] == "img2img" and near.info["strength"] == 0.25
    original = np.asarray(Image.open(image), np.float32) / 127.5 - 1.0
    assert np.abs(near.images[0] - original).mean() < np.abs(far.images[0] - original).mean()
    with pytest.raises(SampleInputError, match="--guidance_rescale must be in"):
        run(trained, SampleRequest(task="text2img", prompt="x", num=1, guidance_rescale=1.5))
    with pytest.raises(SampleInputError, match="--class does not apply"):
        run(trained, SampleRequest(task="text2img", prompt="x", num=1, class_label=2))


def test_not_a_stable_diffusion_folder_gives_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        load_sd_folder(str(tmp_path))
    src = save_tiny_sd_folder(tmp_path / "sd")
    (src / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="vocab.json is missing"):
        load_sd_folder(str(src))
    index = json.loads((src / "model_index.json").read_text())
    index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
    (src / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UnsupportedConfigError, match="SDXL"):
        load_sd_folder(str(src))
    index.pop("text_encoder_2")
    index["_class_name"] = "LDMTextToImagePipeline"
    (src / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UnsupportedConfigError, match="not a Stable Diffusion pipeline"):
        load_sd_folder(str(src))


@pytest.mark.slow
def test_convert_sample_export_command_lines(tmp_path):
    src = save_tiny_sd_folder(tmp_path / "sd", inpainting=True)
    workdir = tmp_path / "wd"
    line = run_cli("ldm_jax.convert", "diffusers", "--dir", str(src), "--workdir", str(workdir))
    assert json.loads(line) == {"out": str(workdir), "source": "diffusers"}
    image, mask = tmp_path / "x.png", tmp_path / "m.png"
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(image)
    m = np.zeros((16, 16), np.uint8)
    m[4:12, 4:12] = 255
    Image.fromarray(m).save(mask)
    out = tmp_path / "inpainted.png"
    args = ["--workdir", str(workdir), "--task", "inpaint", "--image", str(image)]
    args += ["--mask", str(mask), "--prompt", "a face", "--negative_prompt", "blurry"]
    info = json.loads(
        run_cli("ldm_jax.sample", *args, "--num", "2", "--steps", "2", "--out", str(out))
    )
    assert info["inpainting"] == "concat" and info["negative_prompt"] == "blurry"
    grid = np.asarray(Image.open(out))
    assert grid.shape == (20, 38, 3)  # 2 images of 16x16 in a row, 2 pixels of padding
    outside = np.asarray(Image.open(image), np.int32)[:4]  # known pixels are pasted back
    assert np.abs(grid[2:6, 2:18].astype(np.int32) - outside).max() <= 1
    exported = tmp_path / "exported"
    line = run_cli("ldm_jax.export", "--workdir", str(workdir), "--out", str(exported))
    assert json.loads(line)["pipeline"] == "StableDiffusionInpaintPipeline"
    back = diffusers.StableDiffusionInpaintPipeline.from_pretrained(str(exported))
    assert back.unet.config.in_channels == 9


def test_new_prompts_guidance_and_rescale_reuse_the_compiled_sampler():
    workdir = tiny_sd_workdir()
    trained = load_trained_ldm(workdir)
    config = trained.config
    encode = prompt_encoder(workdir, model_config(config)["cond_stage"])
    sample = make_sampler(config, "ddim", 2)
    runs = [("a cat", "", 7.5, 0.0), ("a dog on a hill", "ugly", 3.0, 0.7), ("", "x", 1.0, 1.0)]
    images = []
    for prompt, negative, guidance, rescale in runs:
        images.append(
            sample(
                trained.ae_params,
                trained.ldm_params,
                encode([prompt, prompt]),
                encode([negative]),
                jax.random.PRNGKey(0),
                jnp.float32(guidance),
                jnp.float32(0.0),
                jnp.float32(trained.scale_factor),
                shape=(2, LATENT, LATENT, 4),
                guidance_rescale=jnp.float32(rescale),
            )
        )
    assert sample._cache_size() == 1
    assert float(jnp.abs(images[0] - images[1]).max()) > 1e-3  # the inputs did change


def test_negative_prompt_needs_a_text_model():
    from tests.sampling.tiny_models import random_model, tiny_config

    trained = random_model(tiny_config("paper/cin256_v2.py"))
    with pytest.raises(SampleInputError, match="--negative_prompt: --task generate"):
        run(trained, SampleRequest(num=1, class_label=1, steps=1, negative_prompt="blurry"))
