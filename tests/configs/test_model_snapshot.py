"""Every paper/SD config builds the same model as before the presets, field for field.

`model_snapshot.json` holds each config's sections as the committed code produced them before
the configs were rewritten as presets + differences (commit fdfc6e5). The `model` section must be
equal as it is; `diffusion` equal after the one documented rename (the reference's
`parameterization` "eps"/"x0"/"v" -> `prediction_type` "epsilon"/"sample"/"v_prediction"), with
any field the snapshot lacked at the schema's default; `data`, `latent`, `name` and `reference`
keep every snapshot field.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from ldm_jax.config import schema
from ldm_jax.config.files import load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
SNAPSHOT = json.loads((pathlib.Path(__file__).with_name("model_snapshot.json")).read_text())
# Stated here, independently of `schema.PREDICTION_TYPE_OF_PARAMETERIZATION`.
RENAMED = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def _json(tree):
    return json.loads(json.dumps(tree))


def test_snapshot_covers_every_config():
    files = sorted(ROOT.glob("configs/paper/*.py")) + sorted(ROOT.glob("configs/sd/*.py"))
    assert sorted(SNAPSHOT["configs"]) == sorted(f"{p.parent.name}/{p.stem}" for p in files)
    assert len(files) == 26
    assert SNAPSHOT["_renamed"]["values"] == RENAMED


@pytest.mark.parametrize("name", sorted(SNAPSHOT["configs"]))
def test_same_sections_as_before_presets(name):
    want = SNAPSHOT["configs"][name]
    got = _json(load_config_file(ROOT / "configs" / f"{name}.py").to_dict())
    assert got["model"] == want["model"]
    for section in ("data", "latent"):
        for key, value in want.get(section, {}).items():
            assert got[section][key] == value, (section, key)
    assert (got["name"], got["reference"]) == (want["name"], want["reference"])
    if "diffusion" not in want:
        return
    expected = dict(want["diffusion"])
    expected["prediction_type"] = RENAMED[expected.pop("parameterization")]
    assert "parameterization" not in got["diffusion"]
    defaults = schema.DiffusionConfig().to_dict()
    for key, value in got["diffusion"].items():
        assert value == expected.get(key, defaults[key]), key
    assert set(expected) <= set(got["diffusion"])
