"""A config read back from JSON (a workdir's `config.json`), refused with a `ConfigError` naming
the file and the problem when it is not a config: invalid JSON, not an object, a section that is
not an object, a key with a dot (`ConfigDict` cannot hold one), nesting deeper than any config.

`workdir/reader.load_config` reads `config.json` through `config_from_json`; the optional fields
that older workdirs lack are filled in (`defaults.with_defaults`). The values themselves are
checked by `validation.validate_config` when a run starts from the config.
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections

from ldm_jax.config.defaults import with_defaults
from ldm_jax.config.errors import ConfigError

# Top-level entries that `with_defaults` completes or reads: each must be an object (or absent;
# `model` may be null).
OBJECT_SECTIONS = ("data", "diffusion", "train")
NULLABLE_SECTIONS = ("model",)


# Nesting a config never needs (its deepest entries are a few levels down); deeper JSON would
# exhaust Python's recursion in `ConfigDict`.
MAX_DEPTH = 32


def _depth(value: Any) -> int:
    """How deeply objects and lists nest in `value` (iteratively: any depth)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _dotted_key(value: Any, path: str = "") -> str | None:
    """The first key (as a dotted path) that holds a dot, in nested objects and lists."""
    if isinstance(value, dict):
        for key, item in value.items():
            if "." in key:
                return f"{path}{key}"
            found = _dotted_key(item, f"{path}{key}.")
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _dotted_key(item, f"{path.rstrip('.')}[{i}].")
            if found is not None:
                return found
    return None


def config_from_json(text: str, source: str = "config.json") -> ml_collections.ConfigDict:
    """The config that `text` (a `config.json`'s contents) holds, with the optional fields of
    older configs filled in.

    Args:
      text: the JSON text.
      source: where it was read from (named in errors).

    Raises:
      ConfigError: `text` is not a JSON object of config sections (see the module docstring).
    """
    try:
        values = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ConfigError(f"{source}: not valid JSON ({e}); rewrite or restore it.") from None
    if not isinstance(values, dict):
        raise ConfigError(
            f"{source}: expected a JSON object of config sections, got {type(values).__name__}."
        )
    if _depth(values) > MAX_DEPTH:
        raise ConfigError(f"{source}: nests objects and lists deeper than {MAX_DEPTH} levels.")
    for name in OBJECT_SECTIONS + NULLABLE_SECTIONS:
        section = values.get(name)
        if name in values and not isinstance(section, dict):
            if section is None and name in NULLABLE_SECTIONS:
                continue
            raise ConfigError(
                f"{source}: config.{name} must be an object of fields, got "
                f"{type(section).__name__}."
            )
    diffusion = values.get("diffusion") or {}
    name = diffusion.get("parameterization")
    if name is not None and not isinstance(name, str):
        raise ConfigError(
            f"{source}: config.diffusion.parameterization must be a string (eps, x0 or v), got "
            f"{type(name).__name__}."
        )
    dotted = _dotted_key(values)
    if dotted is not None:
        raise ConfigError(f"{source}: key {dotted!r} holds a dot, which no config key has.")
    return with_defaults(ml_collections.ConfigDict(values))
