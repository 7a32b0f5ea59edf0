"""release_freed_host_memory hands freed heap pages back to the operating system (glibc);
rerun_with_huge_pages re-executes a command with glibc's huge-page tunable where it helps."""

import ctypes
import ctypes.util
import os
import subprocess
import sys

import pytest

from ldm_jax.training import host_memory
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


def _thp_file(tmp_path, mode: str) -> str:
    modes = " ".join(f"[{m}]" if m == mode else m for m in ("always", "madvise", "never"))
    path = tmp_path / "enabled"
    path.write_text(modes + "\n")
    return str(path)


def test_huge_page_environment_appends_the_tunable(tmp_path, monkeypatch):
    monkeypatch.setattr(host_memory.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(host_memory.sys, "platform", "linux")
    madvise = _thp_file(tmp_path, "madvise")
    env = host_memory.huge_page_environment({"PATH": "/bin"}, madvise)
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    other = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    env = host_memory.huge_page_environment(other, madvise)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert other == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}  # the input is not changed


@pytest.mark.parametrize(
    "environ, libc, thp_mode",
    [
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, ("glibc", "2.36"), "madvise"),  # user's
        ({"LDM_JAX_HUGE_PAGES": "0"}, ("glibc", "2.36"), "madvise"),  # opted out
        ({}, ("glibc", "2.31"), "madvise"),  # glibc without the tunable
        ({}, ("", ""), "madvise"),  # musl and others
        ({}, ("glibc", "2.36"), "always"),  # the kernel already uses huge pages
        ({}, ("glibc", "2.36"), "never"),  # huge pages are off
        ({}, ("glibc", "2.36"), None),  # no such kernel file
    ],
)
def test_huge_page_environment_none_where_it_changes_nothing(
    tmp_path, monkeypatch, environ, libc, thp_mode
):
    monkeypatch.setattr(host_memory.platform, "libc_ver", lambda: libc)
    monkeypatch.setattr(host_memory.sys, "platform", "linux")
    path = _thp_file(tmp_path, thp_mode) if thp_mode else str(tmp_path / "missing")
    assert host_memory.huge_page_environment(environ, path) is None


def _run(args, env, cwd):
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.splitlines()


def test_rerun_with_huge_pages_reexecutes_a_module_entry_point_once(tmp_path):
    """`python -m entry` sees the tunable and its own arguments afterwards, in the same process
    (where this machine makes the tunable useful; otherwise it runs on unchanged). Run as a
    script, through runpy from another program, or with LDM_JAX_HUGE_PAGES=0, it is left alone."""
    (tmp_path / "entry.py").write_text(
        "import os, sys\n"
        "print('start', flush=True)\n"
        "from ldm_jax.training import host_memory\n"
        "pid = os.getpid()\n"
        "host_memory.rerun_with_huge_pages('entry')\n"
        "print(os.environ.get('GLIBC_TUNABLES', ''), sys.argv[1:], pid == os.getpid())\n"
    )
    (tmp_path / "host.py").write_text(
        "import runpy, sys\n"
        "sys.argv = ['entry', 'a']\n"
        "runpy.run_module('entry', run_name='__main__', alter_sys=True)\n"
    )
    drop = ("GLIBC_TUNABLES", "LDM_JAX_HUGE_PAGES")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    out = _run(["-m", "entry", "--flag", "x y"], env, tmp_path)
    if host_memory.huge_page_environment(env) is None:
        assert out == ["start", " ['--flag', 'x y'] True"]
    else:  # printed twice: before the re-execution and after it, in the same process
        assert out == ["start", "start", "glibc.malloc.hugetlb=1 ['--flag', 'x y'] True"]
    assert _run(["entry.py", "b"], env, tmp_path) == ["start", " ['b'] True"]
    assert _run(["host.py"], env, tmp_path) == ["start", " ['a'] True"]
    off = {**env, "LDM_JAX_HUGE_PAGES": "0"}
    assert _run(["-m", "entry"], off, tmp_path) == ["start", " [] True"]


def test_dropping_jax_caches_frees_run_jits_and_keeps_held_programs():
    """JAX's cached executables go; a compiled program the caller holds still runs."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    init = jax.jit(lambda x: jnp.sin(x) * 2)
    step = jax.jit(lambda x: x * 3 + 1)
    x = jnp.arange(4.0)
    expected_init = np.asarray(init(x))
    compiled_step = step.lower(x).compile()
    assert init._cache_size() == 1
    release_freed_host_memory()  # the default keeps JAX's caches
    assert init._cache_size() == 1
    release_freed_host_memory(drop_jax_caches=True)
    assert init._cache_size() == 0
    np.testing.assert_allclose(compiled_step(x), np.arange(4.0) * 3 + 1)
    np.testing.assert_allclose(init(x), expected_init)  # compiles again, same result
    assert init._cache_size() == 1
