"""A closed connection is finished a moment after its close record, so that data
emitted after the close (Go's TLS data at (*Conn).Write's return, while another
goroutine closes the socket) still lands in it."""

from __future__ import annotations

import json

from akto_collector.config import Settings
from akto_collector.kernel.records import ADDR, KIND_ADDR, KIND_CLOSE, KIND_DATA, RECORD
from akto_collector.worker import Worker

TGID, FD, GEN = 100, 7, 1
REQUEST = b"GET /items HTTP/1.1\r\nHost: svc\r\n\r\n"
HEAD = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n"  # delimited by the close
BODY = b'{"items": [1, 2, 3]}'


def record(kind, payload=b"", direction=0, pos=0, gen=GEN):
    return RECORD.pack(0, gen, pos, TGID, FD, len(payload), 0, len(payload), kind, 0, direction, 1, 1, 0) + payload


def addr():
    payload = ADDR.pack(2, 8080, 41000, 0, bytes([127, 0, 0, 1]) + bytes(12), bytes([127, 0, 0, 1]) + bytes(12),
                        b"server".ljust(16, b"\0"))
    return record(KIND_ADDR, payload)


def worker(tmp_path, grace):
    w = Worker(0, Settings(workers=1), str(tmp_path / "pairs.jsonl"))
    w.close_grace = grace
    return w


def emitted(w, tmp_path):
    w.sink.flush(5)
    return [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]


def exchange_closed_before_its_last_bytes():
    """Request, the response's head and half its body, the close, then the rest (as two batches)."""
    first = (addr() + record(KIND_DATA, REQUEST, direction=1) + record(KIND_DATA, HEAD + BODY[:8])
             + record(KIND_CLOSE))
    return first, record(KIND_DATA, BODY[8:], pos=len(HEAD) + 8)


def test_data_that_arrives_after_the_close_within_the_grace_completes_the_response(tmp_path):
    w = worker(tmp_path, grace=60.0)
    first, late = exchange_closed_before_its_last_bytes()
    w.handle_batch(first)
    assert w.counters["pairs"] == 0 and len(w.closing) == 1  # held, not finished
    w.handle_batch(late)
    w.finish_closed(float("inf"))
    [pair] = emitted(w, tmp_path)
    assert pair["responsePayload"] == BODY.decode() and not w.streams and not w.metas and not w.closing


def test_the_connection_is_finished_once_the_grace_is_over(tmp_path):
    w = worker(tmp_path, grace=0.0)
    first, _ = exchange_closed_before_its_last_bytes()
    w.handle_batch(first)  # no grace: finished at the end of the batch, with what it has
    [pair] = emitted(w, tmp_path)
    assert pair["responsePayload"] == BODY[:8].decode() or "PayloadCut" in json.dumps(pair)
    assert not w.streams and not w.metas and not w.closing


def test_records_after_the_close_in_the_same_batch_land_even_without_grace(tmp_path):
    w = worker(tmp_path, grace=0.0)
    first, late = exchange_closed_before_its_last_bytes()
    w.handle_batch(first + late)
    [pair] = emitted(w, tmp_path)
    assert pair["responsePayload"] == BODY.decode()


def test_a_new_connection_on_the_reused_fd_is_its_own(tmp_path):
    w = worker(tmp_path, grace=60.0)
    first, late = exchange_closed_before_its_last_bytes()
    reused = (record(KIND_DATA, REQUEST, direction=1, gen=GEN + 1)
              + record(KIND_DATA, b"HTTP/1.1 204 No Content\r\n\r\n", gen=GEN + 1))
    w.handle_batch(first + reused + late)
    w.finish_closed(float("inf"))
    statuses = sorted(p["statusCode"] for p in emitted(w, tmp_path))
    assert statuses == ["200", "204"]


def test_a_short_record_at_the_end_of_a_batch_is_counted_not_read_past(tmp_path):
    w = worker(tmp_path, grace=0.0)
    whole = record(KIND_DATA, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", direction=1)
    w.handle_batch(whole + whole[:20])
    assert w.counters["worker.dropped.truncated_record"] == 1
    assert w.counters["worker.records"] == 1
