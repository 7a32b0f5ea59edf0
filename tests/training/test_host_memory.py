"""release_freed_host_memory hands freed heap pages back to the operating system (glibc)."""

import ctypes
import ctypes.util
import sys

import pytest

from ldm_jax.training.host_memory import release_freed_host_memory


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmRSS"))
    return int(line.split()[1]) * 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and glibc")
def test_freed_heap_pages_go_back_to_the_system():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    block, count = 64 * 1024, 3200  # 200 MiB in blocks below glibc's mmap threshold
    blocks = [libc.malloc(block) for _ in range(count)]
    for b in blocks:
        libc.memset(b, 1, block)  # touch every page
    # Keep every 10th block: the freed runs between them are holes that free() cannot give
    # back (only the top of the heap shrinks by itself); malloc_trim returns their pages.
    kept = blocks[::10]
    for b in blocks:
        if b not in kept:
            libc.free(b)
    before = _rss_bytes()
    assert release_freed_host_memory() is True
    released = before - _rss_bytes()
    for b in kept:
        libc.free(b)
    freed = block * (count - len(kept))
    assert released > 0.5 * freed, f"{released / 2**20:.0f} of {freed / 2**20:.0f} MiB released"
