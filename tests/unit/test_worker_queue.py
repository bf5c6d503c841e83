"""The records queued for a worker are bounded by bytes, within TRAFFIC_BUFFER_THRESHOLD."""

from __future__ import annotations

import types

from akto_collector.supervisor.workers import QUEUE_BATCHES, WorkerHandle
from akto_collector.worker import budget_shares


def _handle(max_bytes: int) -> WorkerHandle:
    settings = types.SimpleNamespace(buffer_threshold_bytes=4 * max_bytes, workers=1)
    h = WorkerHandle(0, settings, "-", ctx=None)  # not started: only the queue's bookkeeping
    assert h.process is None and h.queue.maxsize == QUEUE_BATCHES
    h.max_queue_bytes = max_bytes
    return h


def test_budget_shares_add_up_to_the_threshold_per_worker():
    settings = types.SimpleNamespace(buffer_threshold_bytes=600 << 20, workers=2)
    queued, streams, sink = budget_shares(settings)
    assert queued + streams + sink == 300 << 20
    assert queued == 75 << 20 and streams == sink


def test_a_batch_beyond_the_byte_share_is_dropped_and_counted():
    h = _handle(1000)
    h.submit(b"a" * 600, records=3)
    h.submit(b"b" * 600, records=4)  # would make 1200 bytes: dropped
    assert h.queued_bytes == 600 and h.dropped == 4 and h.queue.qsize() == 1
    h.sent_bytes += 600  # the sender thread passed the first one on
    h.queue.get_nowait()
    h.submit(b"c" * 600, records=5)
    assert h.queued_bytes == 600 and h.dropped == 4


def test_the_queue_may_use_what_the_worker_itself_does_not_hold():
    h = _handle(1000)
    h.budget, h.min_queue_bytes = 4000, 1000
    h.last_seen = 0.0
    reports = [{"buffered": 500}, {"buffered": 3900}]

    class Pipe:
        def poll(self):
            return bool(reports)

        def recv(self):
            return reports.pop(0)

    h.report_rx = Pipe()
    h.read_reports()  # both reports: the worker now holds 3900 of its 4000
    assert h.max_queue_bytes == 1000  # never below the queue's own share
    reports.append({"buffered": 500})
    h.read_reports()
    assert h.max_queue_bytes == 3500
    h.submit(b"a" * 3000, records=1)
    h.submit(b"b" * 400, records=1)
    assert h.queued_bytes == 3400 and h.dropped == 0


def test_an_idle_worker_always_gets_the_next_batch_even_a_large_one():
    h = _handle(1000)
    h.submit(b"x" * 5000, records=2)
    assert h.queued_bytes == 5000 and h.dropped == 0
