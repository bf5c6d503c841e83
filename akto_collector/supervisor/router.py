"""The data plane of the supervisor: drain the ring buffer, route records to workers.

Every ring buffer record passes here, so this is the supervisor's hot path
and does as little as it can: records stay raw bytes, only the kind byte and
the (tgid, fd) bytes are looked at. Connection records go to the worker of
their shard (a hash of tgid and fd: one connection, one worker, in order);
a process exit goes to every worker (each may hold its connections); an exec
is handed to the uprobe manager. A drain's records are joined into one blob
per worker and handed to that worker's queue.
"""

from __future__ import annotations

from collections import deque

from akto_collector.kernel.records import KIND_EXEC, KIND_EXIT, KIND_OFFSET, TGID, TGID_FD


class Router:
    """Routes one drain's raw records to per-worker batches."""

    __slots__ = ("batches", "execs", "ring_peak", "_records")

    def __init__(self, workers: int) -> None:
        self.batches: list[list[bytes]] = [[] for _ in range(workers)]
        self.execs: deque[int] = deque()  # pids that exec'ed, for the scanner
        self.ring_peak = 0  # most bytes found waiting in the ring buffer since it was last reset
        self._records: list[bytes] = []  # one drain's records, reused

    def drain(self, probes) -> None:
        """Take every record waiting in the ring buffer into the batches."""
        records = self._records
        pending = probes.ring.pending_bytes()
        if pending > self.ring_peak:
            self.ring_peak = pending
        probes.drain(records)
        batches = self.batches
        n = len(batches)
        for raw in records:
            kind = raw[KIND_OFFSET]
            if kind < KIND_EXEC:
                batches[hash(raw[TGID_FD]) % n].append(raw)
            elif kind == KIND_EXEC:
                self.execs.append(int.from_bytes(raw[TGID], "little"))
            elif kind == KIND_EXIT:
                for b in batches:
                    b.append(raw)
        records.clear()

    def flush(self, workers) -> None:
        """Hand each worker its batch, as one blob."""
        for w, batch in zip(workers, self.batches):
            if batch:
                w.submit(b"".join(batch), len(batch))
                batch.clear()
