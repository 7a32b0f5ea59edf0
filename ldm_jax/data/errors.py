"""The data layer's one-line user error (a base class low enough for every data module)."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset that cannot be used as configured; the one-line message names the problem and
    the fix (an unreadable or unusable image folder, a split smaller than one batch, ...)."""
