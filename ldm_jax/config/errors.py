"""The error of an invalid config value (`config/validation.py` raises it; the CLIs print it on
one line), and the helpers the checks raise it with."""

from __future__ import annotations

import ml_collections


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and what to use instead."""


def one_line(message: str) -> str:
    """A message on one line (a value's repr may span several)."""
    return " ".join(message.split())


def require(ok: bool, field: str, message: str) -> None:
    """Raises `ConfigError("config.<field>: <message>")` (on one line) unless `ok`."""
    if not ok:
        raise ConfigError(one_line(f"config.{field}: {message}"))


def train_sections(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The training sections a run reads (a fine-tune trains no first stage)."""
    return ("train",) if config.stage == "finetune" else ("autoencoder_train", "train")
