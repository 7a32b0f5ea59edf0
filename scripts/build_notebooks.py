"""Builds notebooks/<name>.ipynb from notebooks/src/<name>.py, or checks that they agree.

  python scripts/build_notebooks.py            # rewrite every notebook from its source
  python scripts/build_notebooks.py --check    # exit 1 naming the notebooks that differ

A source is a Python file in the "percent" format: `# %%` starts a code cell, `# %% [markdown]`
a markdown cell (its lines start with "# "). The line `# %% setup` is replaced by
notebooks/src/_setup.py, the first cell every notebook shares (clone and install on Colab). The
notebooks are written without outputs, with stable cell ids, so a rebuild is byte-identical.
Edit the sources, not the .ipynb files (tests/notebooks checks that they agree).
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOURCES = NOTEBOOKS / "src"
SETUP = SOURCES / "_setup.py"
SETUP_MARKER = "# %% setup"
METADATA = {
    "accelerator": "TPU",
    "colab": {"provenance": [], "toc_visible": True},
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def _markdown(body: str) -> str:
    lines = body.splitlines()
    return "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines)


def build(source: pathlib.Path) -> str:
    """The notebook JSON text of one percent-format source."""
    text = source.read_text().replace(SETUP_MARKER + "\n", SETUP.read_text())
    cells = []
    for block in re.split(r"^# %%", text, flags=re.MULTILINE)[1:]:
        header, _, body = block.partition("\n")
        body = body.strip("\n")
        if header.strip() == "[markdown]":
            cells.append(nbformat.v4.new_markdown_cell(_markdown(body)))
        elif header.strip():
            raise ValueError(f"{source}: unknown cell header '# %%{header}'.")
        else:
            cells.append(nbformat.v4.new_code_cell(body))
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i}"
    notebook = nbformat.v4.new_notebook(cells=cells, metadata=METADATA)
    nbformat.validate(notebook)
    return nbformat.writes(notebook) + "\n"


def sources() -> list[pathlib.Path]:
    """Every notebook source (files starting with "_" are shared parts)."""
    return sorted(p for p in SOURCES.glob("*.py") if not p.name.startswith("_"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = parser.parse_args()
    stale = []
    for source in sources():
        target = NOTEBOOKS / f"{source.stem}.ipynb"
        text = build(source)
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(target.name)
        else:
            target.write_text(text)
            print(f"wrote {target.relative_to(ROOT)}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python scripts/build_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
