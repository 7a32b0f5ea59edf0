"""Turns the library's expected user-facing errors into one-line CLI messages (no traceback)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from ldm_jax.config.validation import ConfigError
from ldm_jax.training.checkpoint import MissingCheckpointError
from ldm_jax.training.loop import PreemptedError, TrainingDivergedError

# Errors whose message already names the problem and the fix.
USER_ERRORS = (
    ConfigError,
    MissingCheckpointError,
    TrainingDivergedError,
    PreemptedError,
    FileNotFoundError,
)


@contextlib.contextmanager
def user_errors_as_exit(program: str) -> Iterator[None]:
    """Exits with status 1 and `program: message` on stderr for a `USER_ERRORS` exception."""
    try:
        yield
    except USER_ERRORS as e:
        sys.exit(f"{program}: error: {e}")
