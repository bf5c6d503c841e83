"""When the kernel sheds new connections (probes/common.h, ``shed_state``).

Shedding starts when the ring buffer holds more than half its size at a
drain, when a worker's queue holds more than half its batches (the
worker is not keeping up), or, already above a quarter, when the cgroup throttled the
collector since the last look (it uses more CPU than its quota: the ring
would soon be full, so shedding starts a little earlier). The kernel also starts it itself the
moment the ring refuses a record. It stops once the ring holds less than a
quarter and nothing else is behind. Pure: the arbiter feeds it figures and
applies the verdict.
"""

from __future__ import annotations

HIGH, LOW = 0.5, 0.25


class Shedder:
    __slots__ = ("ring_size", "reason", "episodes", "always")

    def __init__(self, ring_size: int, always: bool = False) -> None:
        self.ring_size = ring_size
        self.always = always  # a test hook: shed from the start, as under a lasting overload
        self.reason: str | None = None  # why shedding is on, None when off
        self.episodes = 0

    def decide(self, pending: int, kernel_on: bool, behind: bool = False, throttled: bool = False) -> str | None:
        """The reason to shed after a drain that found ``pending`` bytes waiting;
        None to capture everything. ``kernel_on``: the kernel's flag as it is."""
        fill = pending / self.ring_size
        if fill >= HIGH:
            reason = "ring_buffer"
        elif behind:
            reason = "workers_behind"
        elif throttled and fill > LOW:
            reason = "cpu_throttled"
        elif fill > LOW and (kernel_on or self.reason):
            # Not yet below the low-water mark; kernel_on alone: the ring
            # refused a record since the last drain.
            reason = self.reason or "ring_buffer_full"
        else:
            reason = "always" if self.always else None
        if reason and not self.reason:
            self.episodes += 1
        self.reason = reason
        return reason
