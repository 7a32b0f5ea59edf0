"""Schema-driven checks of a config section: known keys, value types, choices and ranges.

Each typed section (`config/sections.py`, `config/schema.DiffusionConfig`) states its fields'
types, `choices` and `valid` ranges (`config/fields.py`); `check_section` holds a section of a
config (a `ConfigDict` or a plain mapping) against them and raises a `ConfigError` naming the
first bad field, the problem and the fix:

  config.train.batch_size: expected an integer, got '64' (str); write 64 without quotes.
  config.train.ema_decay: must be in (0, 1), got 1.5; ...
  config.sampel: unknown key (did you mean 'sample'?); valid keys: ...

Types: `int` takes integers only (not booleans); `float` takes any finite real number except
booleans (an integer too); `bool` takes True/False only; `tuple[X, ...]` takes a list or tuple of
X; `X | None` takes None too; a nested section is checked field by field; a `Spec` section (the
first-stage loss) is left to its own `from_dict`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from ldm_jax.config.errors import ConfigError
from ldm_jax.config.fields import POSITIVE, field_range
from ldm_jax.models.specs import closest

_TYPE_NAMES = {int: "an integer", float: "a number", bool: "True or False", str: "a string"}


def is_mapping(value: Any) -> bool:
    """A section value: a `ConfigDict` or a mapping."""
    return isinstance(value, Mapping) or (hasattr(value, "items") and hasattr(value, "keys"))


@functools.cache
def _hints(section: type) -> dict[str, Any]:
    return typing.get_type_hints(section)


def _describe(hint: Any) -> str:
    """A type as words, for messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if hint is type(None):
        return "None"
    if origin is Literal:
        return "one of " + repr(args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} values"
    return _TYPE_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def show(value: Any) -> str:
    """A value for a one-line message: its repr, shortened; a section as its keys."""
    if is_mapping(value):
        text = "a section {" + ", ".join(repr(k) for k in list(value.keys())[:6]) + "}"
    else:
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def _scalar_ok(value: Any, hint: Any) -> bool:
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if hint is float:
        return (
            isinstance(value, numbers.Real)
            and not isinstance(value, (bool, np.bool_))
            and math.isfinite(float(value))
        )
    if hint is str:
        return isinstance(value, str)
    return True  # Any, and types this checker does not know


def type_problem(value: Any, hint: Any) -> str | None:
    """What is wrong with `value` as a `hint` (None: nothing); `Spec` sections are skipped."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return None
    if isinstance(hint, type) and hasattr(hint, "from_dict"):  # its own from_dict checks fields
        return None if is_mapping(value) else f"expected a section, got {show(value)}"
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None if type(None) in args else f"expected {_describe(hint)}, got None"
        problems = [type_problem(value, a) for a in args if a is not type(None)]
        return None if None in problems else problems[0]
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return None
        near = (
            closest(value, [a for a in args if isinstance(a, str)])
            if isinstance(value, str)
            else ""
        )
        return f"{show(value)} is not one of {args}{near}"
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return f"expected {_describe(hint)}, got {show(value)} ({type(value).__name__})"
        variadic = len(args) == 2 and args[1] is Ellipsis
        if not variadic and len(value) != len(args):
            return f"expected {_describe(hint)}, got {len(value)}: {show(value)}"
        for i, item in enumerate(value):
            problem = type_problem(item, args[0] if variadic else args[i])
            if problem is not None:
                return f"item {i}: {problem}"
        return None
    if dataclasses.is_dataclass(hint):
        return None if is_mapping(value) else f"expected a section, got {show(value)}"
    if _scalar_ok(value, hint):
        return None
    if hint is float and isinstance(value, float):
        return f"expected a finite number, got {show(value)}"
    return f"expected {_describe(hint)}, got {show(value)} ({type(value).__name__})"


def _fix_for_type(field: dataclasses.Field, hint: Any, value: Any) -> str:
    if hint in (int, float) and isinstance(value, str):
        return "write the number without quotes"
    if field.default is not dataclasses.MISSING and field.default is not None:
        return f"e.g. the default {show(field.default)}"
    return f"give {_describe(hint)}"


def range_problem(value: Any, field: dataclasses.Field) -> str | None:
    """`value` (of the right type) against the field's `valid` range (None: accepted)."""
    valid = field_range(field)
    if valid is None or isinstance(value, (bool, np.bool_)):
        return None
    if not isinstance(value, numbers.Real) or valid.contains(value):
        return None
    if valid == POSITIVE and isinstance(value, numbers.Integral):
        return f"must be an integer >= 1, got {show(value)}"
    return f"must be {valid.describe()}, got {show(value)}"


def check_keys(
    values: Any, names: typing.Iterable[str], where: str, extra: tuple[str, ...] = ()
) -> None:
    """Raises a `ConfigError` for the first key of `values` that is not one of `names`."""
    names = tuple(names)
    for key in values.keys():
        if key not in names and key not in extra:
            if not (isinstance(key, str) and key.isprintable()):
                key = repr(key)  # keep the message on one line
            raise ConfigError(
                f"config.{where}.{key}: unknown key{closest(str(key), names)}; valid keys of "
                f"config.{where}: {', '.join(names)}."
                if where
                else f"config.{key}: unknown key{closest(str(key), names)}; valid top-level "
                f"keys: {', '.join(names)}."
            )


def check_section(
    values: Any, section: type, where: str | None = None, extra: tuple[str, ...] = ()
) -> None:
    """Checks a section of a config against its typed dataclass.

    Args:
      values: the section (a `ConfigDict` or mapping).
      section: the dataclass (`sections.TrainSection`, ...).
      where: its dotted path (default `section.SECTION`; "" for the top level).
      extra: keys accepted besides the fields (checked elsewhere).

    Raises:
      ConfigError: `config.<where>.<field>: <problem>; <fix>` for an unknown key (with the
        closest valid one), a missing required field, a value of the wrong type, a value that
        is not one of its `choices`, or a number outside its `valid` range.
    """
    where = section.SECTION if where is None else where
    prefix = f"{where}." if where else ""
    if not is_mapping(values):
        raise ConfigError(
            f"config.{where}: expected a section (a dict of fields), got {show(values)}; see "
            "docs/configuration.md."
        )
    fields = {f.name: f for f in dataclasses.fields(section)}
    check_keys(values, fields, where, extra)
    hints = _hints(section)
    for name, field in fields.items():
        path = f"config.{prefix}{name}"
        if name not in values:
            if (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                raise ConfigError(f"{path}: is missing; give {_describe(hints[name])}.")
            continue
        value, hint = values[name], hints[name]
        problem = type_problem(value, hint)
        if problem is not None:
            raise ConfigError(f"{path}: {problem}; {_fix_for_type(field, hint, value)}.")
        if dataclasses.is_dataclass(hint):
            check_section(value, hint, f"{prefix}{name}")
            continue
        choices = tuple(field.metadata.get("choices", ()))
        if choices and value not in choices:
            strings = [c for c in choices if isinstance(c, str)]
            near = closest(value, strings) if isinstance(value, str) else ""
            raise ConfigError(f"{path}: {show(value)} is not one of {choices}{near}.")
        problem = range_problem(value, field)
        if problem is not None:
            raise ConfigError(f"{path}: {problem}.")
