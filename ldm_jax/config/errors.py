"""The error of an invalid config value (`config/validation.py` raises it; the CLIs print it on
one line)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and what to use instead."""
