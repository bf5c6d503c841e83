"""glibc's allocator, told to give memory back (the memory guard measures
private memory: what the allocator keeps counts as if it were in use)."""

from __future__ import annotations

import ctypes
import ctypes.util


def release_freed_memory() -> None:
    """Give back to the system what the allocator keeps after the programs'
    compile (LLVM frees ~30 MB that glibc would otherwise hold)."""
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters


def tune_allocator() -> None:
    """Make freed batches go back to the system. Batches of records (a
    drain's worth for a worker, up to megabytes) are allocated and freed by
    several threads: glibc would keep them in per-thread arenas and raise its
    mmap threshold after the first free, so private memory would stay at its
    peak and the memory guard would restart a collector whose live data fits.
    A fixed 256 KiB mmap threshold returns each large block on free; two
    arenas bound the per-thread ones; trimming above 1 MiB returns the heap's top."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(M_MMAP_THRESHOLD, 256 << 10)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 20)
        libc.mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):  # not glibc
        pass
