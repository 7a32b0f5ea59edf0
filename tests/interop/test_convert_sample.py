"""convert -> workdir -> sample round trips for the text, concat and diffusers paths, and the
one-line errors of bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from ldm_jax import convert, interop
from ldm_jax.config import builders
from ldm_jax.sampling.image_inputs import ImageInputError
from ldm_jax.sampling.tasks import SampleInputError, SampleRequest, run
from ldm_jax.workdir.reader import load_trained_ldm
from tests.interop import paper_checkpoints as pc
from tests.interop import reference as ref
from tests.interop.reference import TOL, max_err, torch
from tests.interop.test_compvis_text import MAX_LEN, VOCAB, text_checkpoint  # noqa: F401

pytestmark = pytest.mark.slow


def _eps(trained, z, t, y):
    denoiser = builders.build_denoiser(trained.config)
    fn = jax.jit(lambda p, z, t, y: denoiser.apply({"params": p}, z, t, y))
    return np.asarray(fn(trained.ldm_params, z, t, y))


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "ldm_jax.sample", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _png(path, array):
    Image.fromarray(array).save(path)
    return str(path)


def test_text_model_round_trip(text_checkpoint, tmp_path):  # noqa: F811
    cfg, ckpt, vocab, *_ = text_checkpoint
    out = str(tmp_path / "wd")
    assert (
        convert.main(["compvis", "--config", cfg, "--ckpt", ckpt, "--out", out, "--vocab", vocab])
        == 0
    )
    trained = load_trained_ldm(out)
    assert trained.config.model.cond_stage.kind == "bert"
    assert (tmp_path / "wd" / "vocab.txt").read_text() == open(vocab).read()
    ldm = interop.load_compvis(cfg, ckpt, vocab=vocab)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
    t = np.array([5, 600], np.int32)
    ids = rng.integers(0, VOCAB, (2, MAX_LEN)).astype(np.int32)
    assert max_err(_eps(trained, z, t, ids), jax.jit(ldm.eps)(z, t, ids)) < TOL

    request = SampleRequest(task="text2img", num=2, prompt="a red fox", steps=2, guidance=3.0)
    fox = run(trained, request)
    assert fox.images.shape == (2, 16, 16, 3) and np.isfinite(fox.images).all()
    assert fox.info["prompt"] == "a red fox" and fox.info["guidance"] == 3.0
    moon = run(trained, SampleRequest(task="text2img", num=2, prompt="the moon", steps=2))
    assert max_err(fox.images, moon.images) > 1e-3  # the prompt reaches the U-Net
    with pytest.raises(SampleInputError, match="--task text2img --prompt"):
        run(trained, SampleRequest(task="generate", num=1))
    with pytest.raises(SampleInputError, match="needs --prompt"):
        run(trained, SampleRequest(task="text2img", num=1))

    png = tmp_path / "fox.png"
    proc = _cli(
        f"--workdir={out}",
        "--task=text2img",
        "--prompt=red fox",
        "--num=2",
        "--steps=2",
        f"--out={png}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["task"] == "text2img" and line["prompt"] == "red fox"
    assert np.asarray(Image.open(png)).shape == (2 + 18, 2 * 18 + 2, 3)


def _inputs(tmp_path, task):
    rng = np.random.default_rng(1)
    if task == "superres":
        return {"image": _png(tmp_path / "low.png", rng.integers(0, 256, (4, 4, 3), np.uint8))}
    if task == "inpaint":
        mask = np.zeros((16, 16), np.uint8)
        mask[4:12, 4:12] = 255
        return {
            "image": _png(tmp_path / "img.png", rng.integers(0, 256, (16, 16, 3), np.uint8)),
            "mask": _png(tmp_path / "mask.png", mask),
        }
    labels = rng.integers(0, pc.LABELS, (16, 16), np.uint8)
    return {"image": _png(tmp_path / "map.png", labels)}


def _condition(task, inputs, trained):
    """The denoiser's y and CompVisLDM.eps's cond for the first request image."""
    if task == "superres":
        x = np.asarray(Image.open(inputs["image"]), np.float32)[None] / 127.5 - 1
        return x, x
    if task == "semantic":
        onehot = np.eye(pc.LABELS, dtype=np.float32)[np.asarray(Image.open(inputs["image"]))][None]
        return onehot, onehot
    y = np.random.default_rng(2).standard_normal((1, 4, 4, 4)).astype(np.float32)
    return y, y


@pytest.mark.parametrize("task", sorted(pc.TASKS))
def test_concat_model_round_trip(task, tmp_path):
    cfg, ckpt = pc.write_checkpoint(tmp_path, task)
    out = str(tmp_path / "wd")
    assert convert.main(["compvis", "--config", cfg, "--ckpt", ckpt, "--out", out]) == 0
    trained = load_trained_ldm(out)
    ldm = interop.load_compvis(cfg, ckpt)
    inputs = _inputs(tmp_path, task)
    y, cond = _condition(task, inputs, trained)
    z = np.random.default_rng(0).standard_normal((1, 4, 4, pc.LATENT)).astype(np.float32)
    t = np.array([321], np.int32)
    err = max_err(_eps(trained, z, t, y), jax.jit(ldm.eps)(z, t, cond))
    print(f"{task}: workdir eps vs load_compvis {err:.2e}")
    assert err < TOL

    result = run(trained, SampleRequest(task=task, num=2, steps=2, **inputs))
    assert result.images.shape == (2, 16, 16, 3) and np.isfinite(result.images).all()
    if task == "inpaint":  # known pixels are kept exactly, the hole is generated
        image = np.asarray(Image.open(inputs["image"]), np.float32) / 127.5 - 1
        np.testing.assert_allclose(result.images[:, :4], np.broadcast_to(image[:4], (2, 4, 16, 3)))
        assert max_err(result.images[:, 4:12, 4:12], image[4:12, 4:12]) > 1e-2
    other = "generate" if task != "superres" else "inpaint"
    with pytest.raises(SampleInputError, match=f"--task {task}"):
        run(trained, SampleRequest(task=other, num=1, **inputs))
    if task == "superres":  # the CLI, and its one-line error for a missing file
        png = tmp_path / "sr.png"
        proc = _cli(
            f"--workdir={out}",
            "--task=superres",
            f"--image={inputs['image']}",
            "--num=1",
            "--steps=2",
            f"--out={png}",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert np.asarray(Image.open(png)).shape == (20, 20, 3)
        bad = _cli(f"--workdir={out}", "--task=superres", "--image=/nonexistent/low.png")
        assert bad.returncode == 1
        assert bad.stderr.strip().splitlines() == [
            "python -m ldm_jax.sample: error: --image /nonexistent/low.png: no such file."
        ]


def test_bad_image_inputs_give_one_line_errors(tmp_path):
    cfg, ckpt = pc.write_checkpoint(tmp_path, "semantic")
    out = str(tmp_path / "wd")
    assert convert.main(["compvis", "--config", cfg, "--ckpt", ckpt, "--out", out]) == 0
    trained = load_trained_ldm(out)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    rgb = _png(tmp_path / "rgb.png", np.zeros((16, 16, 3), np.uint8))
    big = _png(tmp_path / "big.png", np.full((16, 16), pc.LABELS, np.uint8))
    for path, message in (
        (str(corrupt), "not a readable image"),
        (rgb, "single-channel label image"),
        (big, f"outside the model's {pc.LABELS} classes"),
    ):
        with pytest.raises(ImageInputError, match=message) as e:
            run(trained, SampleRequest(task="semantic", num=1, image=path))
        assert path in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SampleInputError, match="--class does not apply"):
        run(trained, SampleRequest(task="semantic", num=1, image=rgb, class_label=1))


@pytest.fixture()
def diffusers_pair(tmp_path):
    from tests.interop.test_unet2d_parity import UNET2D_CONFIGS

    torch.set_num_threads(2)
    cfg = dict(UNET2D_CONFIGS["attn_heads"], sample_size=4)
    unet = ref.randomise(ref.diffusers.UNet2DModel(**cfg), 0)
    vq = dict(ref.VQ_CONFIGS["vq_f4"], block_out_channels=(32, 32, 32), norm_num_groups=32)
    vae = ref.randomise(ref.diffusers.VQModel(**vq, scaling_factor=0.5), 1)
    unet.save_pretrained(tmp_path / "unet")
    vae.save_pretrained(tmp_path / "vqvae")
    return tmp_path, unet, vae


def test_diffusers_round_trip(diffusers_pair, capsys):
    tmp_path, unet, vae = diffusers_pair
    out = str(tmp_path / "wd")
    argv = ["diffusers", "--unet", str(tmp_path / "unet"), "--vae", str(tmp_path / "vqvae")]
    assert convert.main([*argv, "--out", out]) == 0
    assert capsys.readouterr().out.splitlines() == [json.dumps({"out": out, "source": "diffusers"})]
    trained = load_trained_ldm(out)
    assert trained.scale_factor == 0.5 and trained.config.model.first_stage.kind == "vq"
    assert trained.config.diffusion.beta_start == 0.0015  # the paper's LDM schedule by default
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
    t = np.array([3, 917], np.int32)
    with torch.no_grad():
        want = ref.nhwc(unet(ref.nchw(z), torch.from_numpy(t).long()).sample)
    err = max_err(_eps(trained, z, t, None), want)
    print(f"diffusers workdir eps vs UNet2DModel: {err:.2e}")
    assert err < TOL
    result = run(trained, SampleRequest(num=3, steps=2))
    assert result.images.shape == (3, 16, 16, 3) and result.info["class"] is None
    with pytest.raises(SampleInputError, match="unconditional"):
        run(trained, SampleRequest(num=1, class_label=0))


def test_diffusers_refuses_cross_attention_unets(tmp_path):
    ref.make_unet("conv_proj_heads").save_pretrained(tmp_path / "unet")
    ref.make_vae("kl_f4").save_pretrained(tmp_path / "vae")
    argv = ["diffusers", "--unet", str(tmp_path / "unet"), "--vae", str(tmp_path / "vae")]
    with pytest.raises(SystemExit) as e:
        convert.main([*argv, "--out", str(tmp_path / "wd")])
    msg = str(e.value.code)
    assert "\n" not in msg and "UNet2DConditionModel" in msg and "--dir SD_FOLDER" in msg
    assert not (tmp_path / "wd").exists()
