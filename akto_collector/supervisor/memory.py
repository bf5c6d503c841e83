"""The collector's own memory, as the restart threshold measures it."""

from __future__ import annotations

from collections.abc import Iterable

import psutil


def private_memory(pids: Iterable[int]) -> int:
    """Private resident memory of these processes, in bytes (anonymous pages).

    File-backed pages are left out: the ~250 MB of LLVM/bcc code the
    supervisor maps is shared and reclaimable, and would otherwise eat a
    third of the default threshold for nothing. A process that is gone counts 0.
    """
    total = 0
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_info()
        except (psutil.Error, OSError):
            continue
        total += info.rss - info.shared  # shared: resident file-backed and shmem pages
    return total
