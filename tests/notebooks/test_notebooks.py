"""The notebooks in notebooks/ run top to bottom in small mode, and are committed clean.

Each is executed by nbclient in a fresh kernel of this interpreter with
`LDM_JAX_NOTEBOOK_SMALL=1` (tiny configs, a few steps), in a temporary working directory (their
workdirs land there). The kernel sees one CPU device, as a CPU Colab runtime does (compiling
for the suite's 8 fake devices doubled a notebook's time; `fit_to_accelerator`'s multi-device
arithmetic has its own tests), with the suite's fast-compile XLA flags. A failing cell fails the
test with the cell's source and traceback.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from ldm_jax.colab.accelerator import SMALL_MODE_VARIABLE

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT_S = 900


def _builder():
    spec = importlib.util.spec_from_file_location(
        "build_notebooks", ROOT / "scripts" / "build_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def test_the_issue_s_notebooks_are_there():
    expected = {
        "quickstart",
        "text2img",
        "inpainting_superres",
        "import_pretrained",
        "reproduce_f_study",
    }
    assert expected <= set(NAMES)


def test_every_notebook_is_built_from_its_source():
    builder = _builder()
    assert sorted(p.stem for p in builder.sources()) == NAMES
    for source in builder.sources():
        built = builder.build(source)
        committed = (NOTEBOOKS / f"{source.stem}.ipynb").read_text()
        assert committed == built, (
            f"notebooks/{source.stem}.ipynb differs from notebooks/src/{source.name}: edit the "
            "source and run python scripts/build_notebooks.py"
        )


def test_the_builder_rejects_an_unknown_cell_header(tmp_path):
    source = tmp_path / "bad.py"
    source.write_text("# %% [raw]\nx = 1\n")
    with pytest.raises(ValueError, match="unknown cell header"):
        _builder().build(source)


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name):
    notebook = _read(name)
    nbformat.validate(notebook)
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{name} cell {i} has outputs: strip them before committing"
            assert cell.execution_count is None, f"{name} cell {i} has an execution count"
    assert notebook.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("name", NAMES)
def test_every_notebook_names_the_small_mode_switch(name):
    source = "\n".join(c.source for c in _read(name).cells)
    assert "small_mode()" in source, f"{name} must honour {SMALL_MODE_VARIABLE}"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_runs_top_to_bottom_in_small_mode(name, tmp_path, monkeypatch):
    monkeypatch.setenv(SMALL_MODE_VARIABLE, "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    flags = os.environ.get("XLA_FLAGS", "").split()
    flags = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
    monkeypatch.setenv("XLA_FLAGS", " ".join([*flags, "--xla_force_host_platform_device_count=1"]))
    notebook = _read(name)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{name}.ipynb failed in small mode:\n{e}")
    errors = [
        out
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors
    images = [
        out
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if "image/png" in out.get("data", {})
    ]
    assert images, f"{name}.ipynb showed no image"
    assert os.listdir(tmp_path), f"{name}.ipynb wrote nothing in its working directory"
