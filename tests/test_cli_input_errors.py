"""Bad inputs to the sample, convert and evaluate CLIs end in one line on stderr naming the
problem, with exit status 1 (2 for a malformed flag), and nothing written: weights files that
are missing, not checkpoints, unsafe, zip bombs, of another kind or architecture; class labels
out of range or not numbers; masks and images of the wrong size; Inception weights that are not
Inception weights. Over-long prompts are truncated with a warning naming the flag, as diffusers
truncates them.

Library-level checks of the same errors live beside their modules (tests/sampling/test_edit.py,
tests/interop/test_convert_sample.py, tests/interop/test_safetensors_files.py); these run the
CLIs as a user does.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from ldm_jax import convert
from ldm_jax.sampling.tasks import SampleRequest, _Task
from ldm_jax.workdir.reader import WorkdirError, check_params
from tests.cli_runner import FAST_XLA, ROOT
from tests.interop import paper_checkpoints as pc
from tests.interop import reference as ref
from tests.interop.reference import torch
from tests.sampling import tiny_models as tm

CONVERT = "python -m ldm_jax.convert: error: "


def _convert_error(*argv: str) -> str:
    """The one-line message `convert` exits with (status 1: a message, not a usage code)."""
    with pytest.raises(SystemExit) as e:
        convert.main(list(argv))
    message = str(e.value.code)
    assert message.startswith(CONVERT) and "\n" not in message, message
    return message[len(CONVERT) :]


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FAST_XLA}".strip()}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )


def _one_error_line(proc: subprocess.CompletedProcess, program: str, status: int = 1) -> str:
    """The message of the single `program: error: ...` line on stderr (nothing else but log
    lines), after checking the exit status."""
    assert proc.returncode == status, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"{program}: error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0][len(f"{program}: error: ") :]


# ------------------------------------------------------------------------------------ convert


@pytest.fixture(scope="module")
def paper_yaml(tmp_path_factory) -> str:
    """A paper-format YAML config (the super-resolution model of paper_checkpoints)."""
    path = tmp_path_factory.mktemp("yaml") / "config.yaml"
    path.write_text(yaml.safe_dump(pc.yaml_config("superres")))
    return str(path)


def test_convert_missing_weight_files(tmp_path, paper_yaml):
    out = str(tmp_path / "wd")
    missing = str(tmp_path / "nope.ckpt")
    assert _convert_error("compvis", "--config", paper_yaml, "--ckpt", missing, "--out", out) == (
        f"--ckpt {missing}: no such file."
    )
    empty = tmp_path / "empty_vae"
    empty.mkdir()
    assert "config.json not found: not a diffusers save_pretrained folder" in _convert_error(
        "diffusers", "--vae", str(empty), "--out", out
    )
    ref.make_vae("kl_f4").save_pretrained(tmp_path / "vae")
    os.remove(tmp_path / "vae" / "diffusion_pytorch_model.safetensors")
    assert "No diffusion_pytorch_model.safetensors" in _convert_error(
        "diffusers", "--vae", str(tmp_path / "vae"), "--out", out
    )
    assert not os.path.exists(out)


def test_convert_refuses_files_that_are_not_checkpoints(tmp_path, paper_yaml):
    out = str(tmp_path / "wd")
    base = ["compvis", "--config", paper_yaml, "--out", out, "--ckpt"]
    text = tmp_path / "notes.ckpt"
    text.write_text("these are my notes, not weights\n")
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    saved = tmp_path / "saved.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}}, saved)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(saved.read_bytes()[:-100])
    other_zip = tmp_path / "photos.ckpt"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("holiday/img.jpg", b"\xff\xd8 not much")
    fake_safetensors = tmp_path / "fake.safetensors"
    fake_safetensors.write_bytes(saved.read_bytes())  # a torch zip with the wrong suffix
    for path, message in (
        (text, "neither a zip-format nor a pre-1.6 torch.save file"),
        (empty, "neither a zip-format nor a pre-1.6 torch.save file"),
        (truncated, "neither a zip-format nor a pre-1.6 torch.save file"),
        (other_zip, "not a torch.save archive (no unique */data.pkl)"),
        (fake_safetensors, "not a valid safetensors file"),
    ):
        error = _convert_error(*base, str(path))
        assert error.startswith(str(path)) and message in error, error
    assert not os.path.exists(out)


def test_convert_refuses_a_pickle_that_would_run_code(tmp_path, paper_yaml):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "callbacks": Payload()}, evil)
    out = str(tmp_path / "wd")
    error = _convert_error("compvis", "--config", paper_yaml, "--ckpt", str(evil), "--out", out)
    assert "Refusing to unpickle global posix.system" in error and "--allow_placeholders" in error
    assert not marker.exists() and not os.path.exists(out)


def test_convert_refuses_a_zip_bomb(tmp_path, paper_yaml):
    bomb = tmp_path / "bomb.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(4)}}, bomb)
    data = bytearray(bomb.read_bytes())
    pos = data.find(b"PK\x01\x02")  # the first central-directory entry: claim 3 GiB
    data[pos + 24 : pos + 28] = (3 << 30).to_bytes(4, "little")
    bomb.write_bytes(bytes(data))
    out = str(tmp_path / "wd")
    error = _convert_error("compvis", "--config", paper_yaml, "--ckpt", str(bomb), "--out", out)
    assert "zip bomb" in error and "the archive's members declare 32212" in error
    assert not os.path.exists(out)


def test_convert_refuses_weights_of_another_kind(tmp_path, paper_yaml):
    """A diffusers VAE's tensors given as a paper checkpoint: every missing group is named."""
    vae = ref.make_vae("kl_f4")
    path = tmp_path / "vae.ckpt"
    torch.save({"state_dict": vae.state_dict()}, path)
    out = str(tmp_path / "wd")
    error = _convert_error("compvis", "--config", paper_yaml, "--ckpt", str(path), "--out", out)
    assert "does not match the model" in error and "missing tensors" in error, error
    assert not os.path.exists(out)


def test_convert_refuses_weights_of_another_architecture(tmp_path):
    """A diffusers VAE folder whose config.json describes wider blocks than its weights."""
    ref.make_vae("kl_f4").save_pretrained(tmp_path / "vae")
    config_path = tmp_path / "vae" / "config.json"
    config = json.loads(config_path.read_text())
    config["block_out_channels"] = [32, 32, 32]
    config_path.write_text(json.dumps(config))
    out = str(tmp_path / "wd")
    error = _convert_error("diffusers", "--vae", str(tmp_path / "vae"), "--out", out)
    assert "mis-shaped tensors" in error and "which does not fit the model's parameter" in error
    assert not os.path.exists(out)


# ------------------------------------------------------------------------------------- sample


@pytest.fixture(scope="module")
def class_workdir(tmp_path_factory, tfds_dir) -> str:
    """quickstart:tiny (grey 32x32, KL f=2, 10 classes) with random weights, as a workdir that
    names the prepared Fashion-MNIST (for evaluate)."""
    return tm.fashion_mnist_workdir(str(tmp_path_factory.mktemp("inputs") / "wd"), tfds_dir)


SAMPLE = "python -m ldm_jax.sample"


@pytest.mark.parametrize(
    "args, status, message",
    [
        (["--class=10"], 1, "--class must be in [0, 10), got 10."),
        (["--class=-1"], 1, "--class must be in [0, 10), got -1."),
        (["--class=shirt"], 2, "flag --class=shirt: invalid literal for int() with base 10"),
    ],
    ids=["class_too_big", "class_negative", "class_name"],
)
def test_sample_unknown_classes(class_workdir, tmp_path, args, status, message):
    out = tmp_path / "s.png"
    proc = _cli("ldm_jax.sample", f"--workdir={class_workdir}", f"--out={out}", *args)
    assert _one_error_line(proc, SAMPLE, status).startswith(message)
    assert not out.exists()


def test_sample_wrong_mask_and_image_sizes(class_workdir, tmp_path):
    image = tm.write_png(tmp_path / "x.png", tm.smooth_image(0))  # 32x32
    wide = tm.write_png(tmp_path / "wide.png", np.full((32, 40), 255, np.uint8))
    odd = tm.write_png(tmp_path / "odd.png", tm.smooth_image(0)[:30, :30])
    out = tmp_path / "s.png"
    common = [f"--workdir={class_workdir}", f"--out={out}", "--class=1", "--steps=4"]
    proc = _cli("ldm_jax.sample", *common, "--task=inpaint", f"--image={image}", f"--mask={wide}")
    message = _one_error_line(proc, SAMPLE)
    assert message.startswith(f"--mask {wide} is 40x32") and "same size" in message, message
    proc = _cli("ldm_jax.sample", *common, "--task=edit", f"--image={odd}")
    message = _one_error_line(proc, SAMPLE)
    assert message == f"--image {odd} is 30x30; this model makes 32x32 images: resize it to 32x32."
    assert not out.exists()


def test_over_long_prompts_are_truncated_with_a_warning(tmp_path, caplog):
    """As diffusers: the prompt keeps its first max_length - 2 tokens, with a warning naming the
    flag and the counts; the ids are those of the truncated prompt. Short prompts: no warning."""
    trained = tm.text_model(str(tmp_path))
    words = "a red circle and a blue square " * 40  # 280 words
    request = SampleRequest(task="text2img", prompt=words, negative_prompt=words, num=2)
    with caplog.at_level(logging.WARNING):
        job = _Task(trained, request, steps=4)
        job.text2img()
    length = job.cond.shape[1]
    kept = length - 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{flag} is 280 tokens long; the text encoder reads only the first {kept}, so the last "
        f"{280 - kept} are ignored (the prompt is truncated, as diffusers does)."
        for flag in ("--prompt", "--negative_prompt")
    ]
    assert job.info["prompt_tokens_dropped"] == 280 - kept
    assert job.info["negative_prompt_tokens_dropped"] == 280 - kept
    short = " ".join(words.split()[:kept])  # exactly what the encoder reads
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fitting = _Task(trained, SampleRequest(task="text2img", prompt=short, num=2), steps=4)
        fitting.text2img()
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    np.testing.assert_array_equal(job.cond, fitting.cond)  # truncation, nothing else
    assert "prompt_tokens_dropped" not in fitting.info


# ----------------------------------------------------------------------------------- evaluate

EVALUATE = "python -m ldm_jax.evaluate"


def test_evaluate_refuses_inception_weights_that_are_not(class_workdir, tmp_path):
    junk = tmp_path / "pt_inception.pth"
    junk.write_text("not weights")
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.ones(2, 3, 3, 3)}, other)
    common = [f"--workdir={class_workdir}", "--what=generative", "--metrics=fid"]
    common += ["--num_samples=8", "--batch_size=8", f"--samples_dir={tmp_path / 'shards'}"]
    proc = _cli("ldm_jax.evaluate", *common, f"--inception_weights={junk}")
    message = _one_error_line(proc, EVALUATE)
    assert message == f"{junk}: neither a zip-format nor a pre-1.6 torch.save file."
    proc = _cli("ldm_jax.evaluate", *common, f"--inception_weights={other}")
    message = _one_error_line(proc, EVALUATE)
    assert message.startswith(f"The Inception weights file {other} does not match the model")
    assert "conv1.weight" in message, message
    assert not (tmp_path / "shards").exists()  # refused before any sampling


def test_workdir_weights_of_the_wrong_dtype_are_listed_by_name():
    """What sample and evaluate read: a workdir whose floating weights were stored as integers
    fails by name before anything compiles, beside mis-shaped ones (float64, which this
    library's own helpers may write, is converted)."""
    f32 = jnp.float32
    abstract = {
        "conv": {"kernel": jax.ShapeDtypeStruct((3, 3, 2, 4), f32)},
        "norm": {"scale": jax.ShapeDtypeStruct((4,), f32), "bias": jax.ShapeDtypeStruct((4,), f32)},
        "emb": {"embedding": jax.ShapeDtypeStruct((5, 4), f32)},
    }
    params = {
        "conv": {"kernel": np.zeros((3, 3, 2, 4), np.float64)},
        "norm": {"scale": np.zeros(4, np.int32), "bias": np.zeros(5, np.float32)},
        "emb": {"embedding": np.zeros((5, 4), jnp.bfloat16)},  # a stored dtype: fine
    }
    with pytest.raises(WorkdirError) as e:
        check_params(params, abstract, "denoiser", "/runs/x/checkpoints/ldm")
    message = str(e.value)
    assert "\n" not in message and message.startswith("The denoiser weights in /runs/x")
    assert "conv/kernel" not in message
    assert "norm/scale: checkpoint dtype int32, expected float32, float16 or bfloat16" in message
    assert "norm/bias: checkpoint (5,), config (4,)" in message and "emb" not in message
