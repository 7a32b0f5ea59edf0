"""Config section fields with their accepted values: choices and numeric ranges.

`option(...)` is a `dataclasses.field` whose metadata states what `config/validation.py` accepts
(`check_value`) and what `config/reference.py` renders into `docs/configuration.md`
(`describe_range`), so both read one statement. The typed sections (`config/sections.py`,
`config/schema.DiffusionConfig`) declare their fields with it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Range:
    """The accepted numbers of a field: within the bounds, or one of `also`.

    Attributes:
      minimum: the value must be >= minimum (None: no lower bound).
      maximum: the value must be <= maximum (None: no upper bound).
      above: the value must be > above (an open lower bound).
      below: the value must be < below (an open upper bound).
      also: values accepted outside the bounds (e.g. -1: "the remaining devices").
    """

    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    also: tuple[Any, ...] = ()

    @property
    def empty(self) -> bool:
        return all(b is None for b in (self.minimum, self.maximum, self.above, self.below))

    def contains(self, value: float) -> bool:
        """Whether a (real, non-boolean) number is accepted; NaN never is."""
        if value in self.also:
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return (
            (self.minimum is None or value >= self.minimum)
            and (self.maximum is None or value <= self.maximum)
            and (self.above is None or value > self.above)
            and (self.below is None or value < self.below)
        )

    def describe(self) -> str:
        """`>= 1`, `in [0, 1)`, `> 0`, `>= 1 or -1`; '' without bounds."""
        low = (
            ("[", self.minimum)
            if self.minimum is not None
            else ("(", self.above)
            if self.above is not None
            else None
        )
        high = (
            ("]", self.maximum)
            if self.maximum is not None
            else (")", self.below)
            if self.below is not None
            else None
        )
        if low and high:
            text = f"in {low[0]}{_number(low[1])}, {_number(high[1])}{high[0]}"
        elif low:
            text = f"{'>=' if low[0] == '[' else '>'} {_number(low[1])}"
        elif high:
            text = f"{'<=' if high[0] == ']' else '<'} {_number(high[1])}"
        else:
            return ""
        return text + "".join(f" or {_number(v)}" for v in self.also)


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


POSITIVE = Range(minimum=1)  # counts: steps, sizes, widths
NON_NEGATIVE = Range(minimum=0)  # weights, optional counts (0: off)
PROBABILITY = Range(minimum=0, maximum=1)  # fractions, [0, 1]
DROP_PROBABILITY = Range(minimum=0, below=1)  # dropout rates, [0, 1)
STRICTLY_POSITIVE = Range(above=0)  # learning rates, scales


def option(
    default: Any = dataclasses.MISSING,
    *,
    choices: Sequence[Any] = (),
    optional: bool = False,
    factory: Any = dataclasses.MISSING,
    valid: Range | None = None,
) -> Any:
    """A section field with its accepted values and whether the defaults dict leaves it out.

    Args:
      default: the default (MISSING: a required field).
      choices: the accepted values (rendered in the reference); the default must be one.
      optional: read with `default` when absent but not written into the defaults dict.
      factory: a default factory (for nested sections) instead of `default`.
      valid: the accepted numbers (rendered in the reference); the default must be one.

    Returns:
      A `dataclasses.field`.

    Raises:
      ValueError: a default outside `choices` or `valid`.
    """
    choices = tuple(choices)
    if choices and default is not dataclasses.MISSING and default not in choices:
        raise ValueError(f"default {default!r} is not one of {choices}.")
    if valid is not None and isinstance(default, (int, float)) and not valid.contains(default):
        raise ValueError(f"default {default!r} is not {valid.describe()}.")
    metadata = {"choices": choices, "optional": optional, "range": valid}
    return dataclasses.field(default=default, default_factory=factory, metadata=metadata)


def field_range(field: dataclasses.Field) -> Range | None:
    """A field's declared `Range` (None: any number of its type)."""
    return field.metadata.get("range")
