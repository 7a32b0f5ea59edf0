"""Handing freed host memory back to the operating system after XLA compilations.

XLA compiles on its own threads, and glibc's allocator keeps what those threads freed in their
arenas instead of returning it to the system. The train step's temporaries are then allocated
on top of that retained memory, so the process's peak resident memory is compile garbage plus
the step. `malloc_trim(0)` returns the free pages of every arena. On the issue-12 U-Net train
step (sd_small_cpu, XLA:CPU) the peak RSS fell from 2.72 to 2.0 GB with one trim after the
compilation (measured 2026-12-06); the step's speed is unchanged.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None on another C library (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (AttributeError, OSError):
        return None


def release_freed_host_memory() -> bool:
    """Collects Python garbage and returns the allocator's free pages to the system.

    Call it after compiling and before running a large program. Nothing that is still in use
    is touched.

    Returns:
      True when glibc's `malloc_trim` ran, False where it does not exist.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
