"""The collector's own memory, and what to do when it passes AKTO_MEM_THRESH_RESTART.

A restart (flush, detach, exec afresh: same pid) gives back what a leak or a
burst took. But a threshold below what the collector needs just to run
(operators derive it from their limits), or a broker outage that keeps the
buffers full, would make it restart again at once, forever, each time
recompiling the programs and leaving a capture gap. So restarts that follow
each other back off: the first is immediate; after it, the collector runs at
least 10 s over the threshold before restarting again, then 30 s, 90 s ... at
most 10 minutes, and an hour without a restart resets the sequence. While
waiting the collector sheds load instead (the router drops what it drains,
counted) so that memory stops growing. ``MemoryGuard`` makes those decisions
from numbers only; the arbiter measures and acts. Its state crosses the exec
(``state()``/``from_state``), so the back-off survives the restart it caused.
"""

from __future__ import annotations

from collections.abc import Iterable

from akto_collector.procfs import private_resident

BACKOFF_FIRST = 10.0  # seconds before a restart that follows another within QUIET
BACKOFF_FACTOR = 3.0
BACKOFF_MAX = 600.0
QUIET = 3600.0  # a restart this long after the previous one starts the sequence afresh

OK, SHED, RESTART = "ok", "shed", "restart"


WORKER_RESERVE = 32 << 20  # what a worker needs beyond its buffers (measured: ~20 MB)
MIN_BUFFER_BUDGET = 16 << 20


def buffer_budget(configured: int, threshold: int, own: int, workers: int) -> int:
    """The bytes the collector may buffer: TRAFFIC_BUFFER_THRESHOLD, but no more
    than fits under AKTO_MEM_THRESH_RESTART next to the collector itself (its
    memory once the programs are loaded, and a reserve per worker) and a
    fortieth of the threshold to spare. Otherwise a broker outage that fills
    the buffers would end in a restart that loses them all."""
    room = threshold - own - workers * WORKER_RESERVE - threshold // 40
    return min(configured, max(MIN_BUFFER_BUDGET, room))


def private_memory(pids: Iterable[int]) -> dict[int, int]:
    """Private resident memory of each of these processes, in bytes (anonymous pages).

    File-backed pages are left out: the ~250 MB of LLVM/bcc code the
    supervisor maps is shared and reclaimable, and would otherwise eat a
    third of the default threshold for nothing. A process that is gone is left out.
    """
    out = {}
    for pid in pids:
        try:
            out[pid] = private_resident("/proc", pid)
        except (OSError, ValueError, IndexError):
            continue
    return out


class MemoryGuard:
    """Decides, at each measurement, whether to go on, shed, or restart.

    ``check(now, used)`` returns ``OK``, ``SHED`` (over the threshold, but a
    restart now would come too soon after the last) or ``RESTART`` (the
    caller restarts and passes ``state()`` on).
    """

    def __init__(self, threshold: int, last_restart: float | None = None, delay: float = 0.0) -> None:
        self.threshold = threshold
        self.last_restart = last_restart  # wall-clock time of the latest, or None
        self.delay = delay  # the wait the next restart needs after the latest
        self.shedding_since: float | None = None

    @classmethod
    def from_state(cls, threshold: int, state: dict) -> MemoryGuard:
        return cls(threshold, state.get("last_restart"), float(state.get("delay", 0.0)))

    def state(self) -> dict:
        return {"last_restart": self.last_restart, "delay": self.delay}

    def recent(self, now: float) -> bool:
        """Whether the latest restart was less than QUIET ago (the next one backs off)."""
        return self.last_restart is not None and now - self.last_restart < QUIET

    def check(self, now: float, used: int) -> str:
        """Over the threshold: restart at once the first time; after a recent
        restart, shed for ``delay`` seconds first (counted from the first check
        that found it over), then restart."""
        if used <= self.threshold:
            self.shedding_since = None
            return OK
        if not self.recent(now):
            return RESTART
        if self.shedding_since is None:
            self.shedding_since = now
        return RESTART if now - self.shedding_since >= self.delay else SHED

    def restarted(self, now: float) -> None:
        """Record a restart happening now: the next one within QUIET waits longer."""
        if not self.recent(now):
            self.delay = BACKOFF_FIRST
        else:
            self.delay = min(BACKOFF_MAX, self.delay * BACKOFF_FACTOR)
        self.last_restart = now
        self.shedding_since = None
