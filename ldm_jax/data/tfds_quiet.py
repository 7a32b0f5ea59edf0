"""Quiet tfds while it prepares a dataset: no progress bars, no log lines of its own.

tfds prints "Downloading and preparing dataset ..." to stdout, draws tqdm bars and logs absl
warnings about folders it is about to create; our callers log their own one-line status instead.
"""

from __future__ import annotations

import contextlib
import logging as std_logging
from collections.abc import Iterator

from absl import logging
from tensorflow_datasets.core.utils import tqdm_utils


class _FromTfds(std_logging.Filter):
    """Drops log records emitted by tfds itself (not ours)."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return "tensorflow_datasets" not in record.pathname


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hides tfds' progress bars and log lines while preparing (we log our own)."""
    active = tqdm_utils._active  # noqa: SLF001 - tfds has no public getter.
    absl_logger, drop = logging.get_absl_logger(), _FromTfds()
    tqdm_utils.display_progress_bar(False)
    absl_logger.addFilter(drop)
    try:
        yield
    finally:
        absl_logger.removeFilter(drop)
        tqdm_utils.display_progress_bar(active)
