"""Loads `get_config(arg)` experiment files by path (the files under `configs/`).

A config that is a small variant of another (same networks, other data or resolution) loads its
base with `load_config_file` and states only what differs, as the reference YAMLs do.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections


def load_config_file(path: str | os.PathLike, arg: str | None = None) -> ml_collections.ConfigDict:
    """Imports the file at `path` and returns its `get_config(arg)`.

    Raises:
      FileNotFoundError: if there is no such file.
      AttributeError: if the file defines no `get_config`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file {path} not found.")
    name = "_ldm_jax_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"Config file {path} defines no get_config(arg=None).")
    return module.get_config(arg) if arg is not None else module.get_config()
