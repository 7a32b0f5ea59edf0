"""The package's imports point one way (DESIGN.md section 2) and form no cycle.

Every `import`/`from ... import` of an `ldm_jax` module is read with `ast`, including imports
inside functions (a lazy import does not excuse an upward one). Each package may import only the
packages listed below it; entry points (the `python -m ldm_jax.X` modules) may import anything.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "ldm_jax"

# package -> the ldm_jax packages it may import (besides its own modules).
BASE = {"models", "diffusion", "losses", "data", "interop", "parallel"}
ALLOWED = {
    "diffusion": set(),
    "models": set(),
    "data": set(),
    "parallel": set(),
    "losses": {"models"},
    "interop": {"models", "diffusion"},
    "config": BASE,
    "training": BASE | {"config"},
    "workdir": BASE | {"config", "training"},
    "sampling": BASE | {"config", "training", "workdir"},
    "evaluation": BASE | {"config", "training", "workdir", "sampling"},
    "trainers": BASE | {"config", "training", "workdir", "sampling"},
    "benchmarks": BASE | {"config", "training", "workdir", "sampling", "trainers"},
    # The notebooks' helpers sit beside the CLIs (they may use every package but the CLIs).
    "colab": BASE | {"config", "training", "workdir", "sampling", "trainers", "evaluation"},
}


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: pathlib.Path) -> set[str]:
    """The ldm_jax modules `path` imports (`from ldm_jax.a import b` counts `ldm_jax.a.b` when
    that is a module, else `ldm_jax.a`)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(a.name for a in node.names if a.name.startswith("ldm_jax"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("ldm_jax"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                modules.add(sub if sub in ALL_MODULES else node.module)
    return modules


ALL_FILES = sorted(PACKAGE.rglob("*.py"))
ALL_MODULES = {_module_name(p) for p in ALL_FILES}
GRAPH = {_module_name(p): _imports(p) for p in ALL_FILES}


def _package(module: str) -> str | None:
    """The first-level package of a module (`ldm_jax.config.files` -> "config"), or None for
    top-level modules (entry points)."""
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and (PACKAGE / parts[1]).is_dir() else None


def test_known_packages_only():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(ALLOWED), "a new package needs its place in ALLOWED"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module):
    pkg = _package(module)
    if pkg is None:
        return  # Entry points and `ldm_jax/__init__.py` may import anything.
    upward = []
    for target in sorted(GRAPH[module]):
        tpkg = _package(target)
        if tpkg == pkg:
            continue
        if tpkg is None or tpkg not in ALLOWED[pkg]:
            upward.append(target)
    assert not upward, f"{module} ({pkg}) imports {upward}"


def test_no_import_cycles():
    """Depth-first search over module imports (package __init__ re-exports included)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH.get(m, ())):
            if t not in GRAPH or t == m:
                continue
            if state.get(t) == 1:
                cycle = stack[stack.index(t) :] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
