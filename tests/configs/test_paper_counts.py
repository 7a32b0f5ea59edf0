"""Every paper/SD config: our eval_shape parameter counts equal the reference implementation's.

Reference counts come from `reference_counts.py` (diffusers models on the meta device, and closed
forms read off the reference code for tau_theta); the paper's published figures are checked too.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from ldm_jax.config.files import load_config_file
from ldm_jax.models import factory

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = sorted(ROOT.glob("configs/paper/*.py")) + sorted(ROOT.glob("configs/sd/*.py"))


def load_config(path: pathlib.Path):
    return load_config_file(path)


@pytest.fixture(scope="module")
def ref():
    from tests.configs import reference_counts

    return reference_counts


def _cfg(path: pathlib.Path) -> dict:
    return load_config(path).model.to_dict()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_counts_equal_reference(path, ref):
    model = _cfg(path)
    ours = factory.param_counts(model)
    expected = {
        "unet": None if model.get("unet") is None else ref.unet_count(model["unet"]),
        "first_stage": ref.first_stage_count(model["first_stage"]),
        "cond_stage": None if "unet" not in model else ref.cond_stage_count(model["cond_stage"]),
    }
    assert ours == expected


# The paper's / reference logs' figures (millions), for orientation: (part(s), value, tolerance).
PUBLISHED = {
    "celebahq_ldm_vq4": (("unet",), 274.06, 0.005),  # "DiffusionWrapper has 274.06 M params."
    "ffhq_ldm_vq4": (("unet",), 274.06, 0.005),
    "lsun_bedrooms_ldm_vq4": (("unet",), 274.06, 0.005),
    "lsun_churches_ldm_kl8": (("unet",), 295, 0.5),
    "cin_ldm_vq8": (("unet", "cond_stage"), 395, 0.5),
    "txt2img_1p4b": (("unet", "cond_stage"), 1450, 5),
    "inpainting_big": (("unet",), 387, 0.5),
    "semantic_synthesis256": (("unet", "cond_stage"), 215, 0.5),
    "bsr_sr": (("unet", "first_stage"), 169, 0.5),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_figures(name):
    parts, value, tol = PUBLISHED[name]
    counts = factory.param_counts(_cfg(ROOT / "configs" / "paper" / f"{name}.py"))
    assert abs(sum(counts[p] for p in parts) / 1e6 - value) <= tol


def test_bsr_sr_split_and_first_stage_zoo():
    counts = factory.param_counts(_cfg(ROOT / "configs/paper/bsr_sr.py"))
    assert round(counts["unet"] / 1e6, 1) == 113.6 and round(counts["first_stage"] / 1e6, 1) == 55.3


def test_summary_cli_json_and_table():
    cmd = [
        sys.executable,
        "-m",
        "ldm_jax.summary",
        "--config",
        str(ROOT / "configs/paper/cin_ldm_vq8.py"),
    ]
    out = subprocess.run([*cmd, "--json"], capture_output=True, text=True, check=True, cwd=ROOT)
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts == factory.param_counts(_cfg(ROOT / "configs/paper/cin_ldm_vq8.py"))
    table = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "input_blocks_1_1" in table and "label_emb" not in table
    assert f"{counts['unet']:,}" in table and "cond_stage_model" in table
    bad = subprocess.run(
        [*cmd, "--config.model.cond_stage.kind=clas"], capture_output=True, text=True, cwd=ROOT
    )
    assert bad.returncode == 2 and "did you mean 'class'" in bad.stderr.strip().splitlines()[-1]
