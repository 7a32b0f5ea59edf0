"""Every conditioning of the paper trains: each paper/SD config's `:tiny` variant through the CLIs.

`python -m ldm_jax.train --config configs/paper/X.py:tiny` trains a few steps on generated
`synthetic_shapes` data, then `python -m ldm_jax.sample --task <its task>` writes a PNG of the
right size. To keep CI time small the first stages are trained once (vq_f4, kl_f8: the stage-1
tests; every tiny first stage of a kind and f has the same shapes) and the LDM configs borrow
them with `--config.train.first_stage_workdir` (itself under test); the tiny runs end without an
in-training grid (the sample CLI samples), except sd_v1's (the conditioned-grid path); the CLIs
compile with XLA's cheap optimisation level (tiny programs, a few steps: compiling dominates).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
SIZE = 32  # tiny image size
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FAST_XLA}".strip()
    return env


def _cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env=_env(), cwd=ROOT
    )
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def train(config: str, workdir: pathlib.Path, *overrides: str) -> list[dict]:
    """Trains `config` (path under configs/, with its argument) and returns metrics.jsonl."""
    path = config if os.path.isabs(config) else str(CONFIGS / config)
    _cli("ldm_jax.train", f"--config={path}", f"--workdir={workdir}", *overrides)
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines]
    losses = [v for m in metrics for k, v in m.items() if k.endswith("/loss")]
    assert losses and all(math.isfinite(v) for v in losses), metrics
    return metrics


def sample(workdir: pathlib.Path, task: str, *args: str, num: int = 1) -> np.ndarray:
    """Runs the sample CLI and returns the PNG it wrote."""
    out = workdir / f"{task}.png"
    _cli(
        "ldm_jax.sample",
        f"--workdir={workdir}",
        f"--task={task}",
        f"--num={num}",
        "--steps=2",
        f"--out={out}",
        *args,
    )
    return np.asarray(Image.open(out))


def tiles(rows: int, columns: int) -> tuple[int, int]:
    """(height, width) of a sample grid of tiny images (2 px padding)."""
    return rows * (SIZE + 2) + 2, columns * (SIZE + 2) + 2


def borrow(first_stage: pathlib.Path) -> tuple[str, str]:
    return "--config.stage=ldm", f"--config.train.first_stage_workdir={first_stage}"


def _png(path: pathlib.Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


@pytest.fixture(scope="module")
def first_stages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """Stage 1 of a VQ (vq_f4) and a KL (kl_f8) config, tiny."""
    out = {}
    for name in ("vq_f4", "kl_f8"):
        workdir = tmp_path_factory.mktemp(name)
        metrics = train(f"paper/{name}.py:tiny", workdir)
        assert any("autoencoder/psnr" in m for m in metrics)
        assert (workdir / "samples" / "autoencoder_step_2.png").is_file()
        out[name] = workdir
    return out


def _step_metrics(workdir: pathlib.Path) -> dict[int, dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return {m["step"]: m for m in map(json.loads, lines) if "step" in m}


def test_vq_and_kl_first_stages_train(first_stages):
    """The zoo configs train with their paper loss: LPIPS from the start, the PatchGAN from the
    second step (the tiny variant's disc_start), every term logged."""
    vq, kl = _step_metrics(first_stages["vq_f4"]), _step_metrics(first_stages["kl_f8"])
    assert "autoencoder/codebook" in vq[1] and "autoencoder/codebook_usage" in vq[1]
    assert "autoencoder/kl" in kl[1] and "autoencoder/logvar" in kl[1]
    for steps in (vq, kl):
        assert steps[1]["autoencoder/lpips"] > 0
        assert steps[1]["autoencoder/disc_factor"] == 0.0 and steps[1]["autoencoder/g_loss"] == 0
        assert steps[2]["autoencoder/disc_factor"] == 1.0
        assert steps[2]["autoencoder/d_weight"] > 0 and steps[2]["autoencoder/disc_loss"] > 0
    assert not (first_stages["vq_f4"] / "checkpoints" / "ldm").exists()


def test_class_adm_and_unconditional(first_stages, tmp_path):
    fs = borrow(first_stages["vq_f4"])
    cin = tmp_path / "cin"
    train("paper/cin256_v2.py:tiny", cin, *fs)
    grid = sample(cin, "generate", "--class=1", "--guidance=2.0", num=1)
    assert grid.shape[:2] == tiles(1, 1)
    # The borrowed first stage is copied in: the workdir samples on its own.
    assert (cin / "checkpoints" / "autoencoder" / "0").is_dir()

    adm_file = tmp_path / "adm.py"
    adm_file.write_text(
        "from ldm_jax.config.files import load_config_file\n"
        "def get_config(arg=None):\n"
        f"    c = load_config_file({str(CONFIGS / 'paper/celebahq_ldm_vq4.py')!r}, 'tiny')\n"
        "    c.model.conditioning_key = 'adm'\n"
        "    c.model.unet.num_classes = 4\n"
        "    return c\n"
    )
    adm = tmp_path / "adm"
    train(str(adm_file), adm, *fs)
    assert sample(adm, "generate", "--class=3", num=2).shape[:2] == tiles(1, 2)

    uncond = tmp_path / "celebahq"
    train("paper/celebahq_ldm_vq4.py:tiny", uncond, *fs)
    assert sample(uncond, "generate", num=1).shape[:2] == tiles(1, 1)


def test_text_conditioned_bert(first_stages, tmp_path):
    workdir = tmp_path / "txt2img"
    train("paper/txt2img_1p4b.py:tiny", workdir, *borrow(first_stages["kl_f8"]))
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["cond_stage"]["vocab"] == "vocab.txt"
    vocab = (workdir / "vocab.txt").read_text().split()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and "circle" in vocab
    grid = sample(workdir, "text2img", "--prompt=a red circle", num=1)
    assert grid.shape[:2] == tiles(1, 1)


def test_concat_superres_inpainting_semantic(first_stages, tmp_path):
    rng = np.random.default_rng(0)
    sr = tmp_path / "bsr_sr"
    train("paper/bsr_sr.py:tiny", sr, *borrow(first_stages["vq_f4"]))
    low = _png(tmp_path / "low.png", rng.integers(0, 255, (8, 8, 3), np.uint8))
    assert sample(sr, "superres", f"--image={low}").shape[:2] == tiles(1, 1)

    sem = tmp_path / "semantic"
    train("paper/semantic_synthesis256.py:tiny", sem, *borrow(first_stages["vq_f4"]))
    labels = _png(tmp_path / "labels.png", rng.integers(0, 5, (SIZE, SIZE), np.uint8))
    assert sample(sem, "semantic", f"--image={labels}").shape[:2] == tiles(1, 1)

    # inpainting_big (VQ-f4 without attention, like every tiny first stage) regresses with L1.
    inp = tmp_path / "inpainting"
    train("paper/inpainting_big.py:tiny", inp, *borrow(first_stages["vq_f4"]))
    image = _png(tmp_path / "image.png", rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:24, 8:24] = 255
    mask = _png(tmp_path / "mask.png", mask)
    assert sample(inp, "inpaint", f"--image={image}", f"--mask={mask}").shape[:2] == tiles(1, 1)


def test_stable_diffusion_tiny_and_full_message(first_stages, tmp_path):
    txt = tmp_path / "sd_v1"
    train("sd/sd_v1.py:tiny", txt, *borrow(first_stages["kl_f8"]))
    assert (txt / "samples" / "step_3.png").is_file()  # conditioned in-training grid
    assert sample(txt, "text2img", "--prompt=a red circle", num=2).shape[:2] == tiles(1, 2)

    inp = tmp_path / "sd_v1_inpainting"
    no_grid = "--config.train.final_samples=false"  # the sample CLI checks it instead
    train("sd/sd_v1_inpainting.py:tiny", inp, *borrow(first_stages["kl_f8"]), no_grid)
    rng = np.random.default_rng(1)
    image = _png(tmp_path / "image.png", rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:16] = 255
    mask = _png(tmp_path / "mask.png", mask)
    out = sample(inp, "inpaint", f"--image={image}", f"--mask={mask}", "--prompt=a blue square")
    assert out.shape[:2] == tiles(1, 1)
    kept = np.asarray(Image.open(image))[16:]  # known pixels are pasted back
    assert np.abs(out[2 + 16 : 2 + SIZE, 2 : 2 + SIZE, :3].astype(int) - kept).max() <= 1
    proc = _cli(
        "ldm_jax.train",
        f"--config={CONFIGS / 'sd/sd_v1.py'}",
        f"--workdir={tmp_path / 'full'}",
        ok=False,
    )
    assert proc.returncode != 0
    message = proc.stderr.strip().splitlines()[-1]
    assert "configs/finetune" in message and "frozen_clip" in message, proc.stderr[-2000:]
