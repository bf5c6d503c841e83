"""The data plane of the supervisor: drain the ring buffer, route records to workers.

Every ring buffer record passes here, so this is the supervisor's hot path
and does as little as it can: records stay raw bytes, only the kind byte and
the (tgid, fd) bytes are looked at. Connection records go to the worker of
their shard (a hash of tgid and fd: one connection, one worker, in order);
a process exit goes to every worker (each may hold its connections); an exec
is handed to the uprobe manager. A drain's records are joined into one blob
per worker and handed to that worker's queue.

A process's tag (supervisor/podtags.py) goes to every worker ahead of its
records, as the supervisor's own KIND_TAGS record: the first record of one
of its connections other than data (OPEN, ADDR: one per connection, so data
records cost one comparison more) asks ``tags`` for it. Such records wait in
``control`` until a batch of their worker's is accepted: a worker that
missed one would label the process's messages wrongly from then on.
"""

from __future__ import annotations

from collections import deque

from akto_collector.kernel.records import KIND_DATA, KIND_EXEC, KIND_EXIT, KIND_OFFSET, TGID, TGID_FD


class Router:
    """Routes one drain's raw records to per-worker batches."""

    __slots__ = ("batches", "control", "execs", "exits", "ring_peak", "pending", "shed", "shed_records", "tags",
                 "_records")

    def __init__(self, workers: int, tags=None) -> None:
        self.batches: list[list[bytes]] = [[] for _ in range(workers)]
        self.control: list[list[bytes]] = [[] for _ in range(workers)]  # KIND_TAGS records, sent first
        self.tags = tags  # a podtags.PodTags, or None: no tags
        self.execs: deque[int] = deque()  # pids that exec'ed, for the scanner
        self.exits: list[int] = []  # tgids that exited, for the kernel table clean-up
        # Set by the memory guard while it backs off: a worker that has not
        # taken its previous batch yet gets no new one (counted), so the
        # queues stop growing while live traffic still flows.
        self.shed = False
        self.shed_records = 0
        self.ring_peak = 0  # most bytes found waiting in the ring buffer since it was last reset
        self.pending = 0  # bytes found waiting at the last drain
        self._records: list[bytes] = []  # one drain's records, reused

    def drain(self, probes) -> None:
        """Take every record waiting in the ring buffer into the batches."""
        records = self._records
        self.pending = pending = probes.ring.pending_bytes()
        if pending > self.ring_peak:
            self.ring_peak = pending
        probes.drain(records)
        batches = self.batches
        n = len(batches)
        tags = self.tags
        at, data, exec_, exit_ = KIND_OFFSET, KIND_DATA, KIND_EXEC, KIND_EXIT  # compiled: C ints
        for raw in records:
            kind = raw[at]
            if kind < exec_:
                if kind != data and tags is not None:
                    pid = int.from_bytes(raw[TGID], "little")
                    if pid not in tags.known:
                        record = tags.lookup(pid)
                        if record is not None:
                            for c in self.control:
                                c.append(record)
                batches[hash(raw[TGID_FD]) % n].append(raw)
            elif kind == exec_:
                self.execs.append(int.from_bytes(raw[TGID], "little"))
            elif kind == exit_:
                for b in batches:
                    b.append(raw)
                self.exits.append(int.from_bytes(raw[TGID], "little"))
        records.clear()

    def broadcast(self, records: list[bytes]) -> None:
        """Records of the supervisor's for every worker, ahead of its next batch."""
        if records:
            for c in self.control:
                c.extend(records)

    def flush(self, workers) -> None:
        """Hand each worker its batch, as one blob (its waiting control records first)."""
        shed = self.shed
        for w, batch, control in zip(workers, self.batches, self.control):
            if batch or control:
                if shed and w.queued_bytes:
                    self.shed_records += len(batch)
                elif control:
                    if w.submit(b"".join(control) + b"".join(batch), len(batch)):
                        control.clear()
                else:
                    w.submit(b"".join(batch), len(batch))
                batch.clear()
