"""One worker process as the supervisor sees it: the process, its pipes, its queue.

The supervisor's loop never writes to a pipe itself: each worker has a
bounded queue of batches, drained into its data pipe by a sender thread, so
a slow worker costs its own queue (counted when it overflows), never the
ring buffer. The queue is bounded in batches and in bytes: at least the
worker's queue share of ``TRAFFIC_BUFFER_THRESHOLD``, and
whatever of its whole share its streams and sink did not hold at its last
report (a backlog usually comes with idle stream and sink buffers).
``worker.budget_shares`` says how the threshold is split.

Constructing a handle starts nothing; ``start()`` spawns the process and the
sender. The process comes from ``ctx`` (a multiprocessing context, or a
test's stand-in), so supervision decisions are testable without processes.
"""

from __future__ import annotations

import queue
import threading
import time

from akto_collector import worker

QUEUE_BATCHES = 256  # batches waiting per worker before we drop (and count)


class WorkerHandle:
    """One worker process, its data pipe and its sender thread."""

    def __init__(self, index: int, settings, output: str, ctx, budget: int | None = None) -> None:
        self.index = index
        self._settings = settings
        self._output = output
        self._budget = budget
        self._ctx = ctx
        self.process = None
        self.data_tx = None
        self.report_rx = None
        self.sender: threading.Thread | None = None
        self.queue: queue.Queue = queue.Queue(QUEUE_BATCHES)
        # Each byte counter has one writer (the loop adds, the sender thread
        # takes away), so no lock is needed.
        shares = worker.budget_shares(settings, budget)
        self.budget = sum(shares)
        self.min_queue_bytes = self.max_queue_bytes = shares[0]
        self.submitted_bytes = 0
        self.sent_bytes = 0
        self.dropped = 0  # records lost because this worker's queue was full
        self.dropped_at_stop = 0  # records dropped to make room for the stop order
        self.last_report: dict = {}
        self.last_seen = time.monotonic()
        self.started_at = 0.0
        self.terminated_at = 0.0  # when it was asked to stop for stalling

    def start(self) -> None:
        """Spawn the process and the thread that feeds its pipe."""
        ctx = self._ctx
        data_rx, self.data_tx = ctx.Pipe(duplex=False)
        self.report_rx, report_tx = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=worker.run, name=f"akto-worker-{self.index}",
                                   args=(self.index, self._settings, self._output, data_rx, report_tx,
                                         self._budget),
                                   daemon=False)
        self.process.start()
        data_rx.close()
        report_tx.close()
        self.started_at = self.last_seen = time.monotonic()
        self.sender = threading.Thread(target=self._send_loop, name=f"sender-{self.index}", daemon=True)
        self.sender.start()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _send_loop(self) -> None:
        while True:
            blob, _records = self.queue.get()
            try:
                self.data_tx.send_bytes(blob)
            except (OSError, ValueError):
                return
            self.sent_bytes += len(blob)
            if not blob:
                return

    @property
    def queued_bytes(self) -> int:
        return self.submitted_bytes - self.sent_bytes

    def submit(self, blob: bytes, records: int) -> bool:
        """Queue a blob of ``records`` records; False when it was dropped (and counted)."""
        queued = self.submitted_bytes - self.sent_bytes
        if queued and queued + len(blob) > self.max_queue_bytes:  # an idle worker always gets one
            self.dropped += records
            return False
        try:
            self.queue.put_nowait((blob, records))
        except queue.Full:
            self.dropped += records
            return False
        self.submitted_bytes += len(blob)
        return True

    def read_reports(self) -> None:
        while self.report_rx.poll():
            try:
                self.last_report = self.report_rx.recv()
            except (EOFError, OSError):
                return
            self.last_seen = time.monotonic()
            held = int(self.last_report.get("buffered", 0))
            self.max_queue_bytes = max(self.min_queue_bytes, self.budget - held)

    def stop(self) -> None:
        """Ask the worker to flush and exit: an empty batch after its data. A
        backlog it could not finish in time is dropped here, and counted."""
        while self.queue.full():
            try:
                blob, records = self.queue.get_nowait()
            except queue.Empty:
                break
            self.dropped_at_stop += records
        self.queue.put((b"", 0))

    def take_over(self, old: WorkerHandle) -> None:
        """Receive what was queued for a dead predecessor meanwhile (its
        connections resync here); what does not fit is counted as dropped."""
        self.dropped += old.dropped
        while True:
            try:
                blob, records = old.queue.get_nowait()
            except queue.Empty:
                return
            if blob:
                self.submit(blob, records)

    def release(self) -> int:
        """After the process is gone: end the sender thread, close the pipes.
        Returns the records that were still queued (lost with the worker)."""
        lost = 0
        while True:
            try:
                _blob, records = self.queue.get_nowait()
            except queue.Empty:
                break
            lost += records
        for end in (self.data_tx, self.report_rx):
            if end is not None:
                try:
                    end.close()  # the sender's next send_bytes fails: it returns
                except OSError:
                    pass
        self.queue.put((b"", 0))  # wakes a sender blocked on an empty queue
        if self.sender is not None:
            self.sender.join(1.0)
        return lost
