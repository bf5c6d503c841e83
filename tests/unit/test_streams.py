"""ConnectionStream: positions, gaps, cut calls, roles, TLS takeover, close and expiry."""

from __future__ import annotations

from collections import Counter

from akto_collector.events import (
    FLAG_TLS,
    RECV,
    ROLE_CLIENT,
    ROLE_SERVER,
    ROLE_UNKNOWN,
    SEND,
    DataEvent,
)
from akto_collector.protocols.streams import ConnectionStream, CoreLimits
from test_http_replay import CONN, Wire

REQ = b"GET /a HTTP/1.1\r\nHost: svc\r\n\r\n"


def resp(body: bytes, status: str = "200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status.encode(), len(body), body)


def stream(role=ROLE_SERVER, **limits):
    counters = Counter()
    return ConnectionStream(CONN, CoreLimits(**limits), counters, role_hint=role), counters, Wire()


def test_pair_is_emitted_the_moment_its_response_completes():
    cs, counters, w = stream()
    assert cs.on_event(w.call(RECV, REQ)) == []
    body = b"x" * 100
    r = resp(body)
    assert cs.on_event(w.call(SEND, r[:-1])) == []
    (ex,) = cs.on_event(w.call(SEND, r[-1:]))
    assert ex.response.body == body and ex.role == ROLE_SERVER and not ex.tls
    assert cs.buffered == 0


def test_gap_inside_content_length_body_cuts_the_body_but_keeps_the_pair():
    cs, counters, w = stream()
    cs.on_event(w.call(RECV, REQ))
    body = bytes(range(256)) * 4000  # ~1 MB response written in one call
    r = resp(body)
    copied = 256 * 1024
    (ex,) = cs.on_event(w.cut_call(SEND, r, copied))
    assert ex.response.body_cut
    assert ex.response.body_size == len(body)
    head_len = len(r) - len(body)
    assert ex.response.body == body[: copied - head_len]
    assert counters["http.uncopied_bytes"] == len(r) - copied
    assert counters["http.body_cut"] == 1
    # The connection goes on: the next exchange is whole.
    cs.on_event(w.call(RECV, REQ))
    (ex2,) = cs.on_event(w.call(SEND, resp(b"ok")))
    assert ex2.response.body == b"ok" and not ex2.response.body_cut


def test_gap_inside_chunk_of_known_size_keeps_framing():
    cs, counters, w = stream()
    cs.on_event(w.call(RECV, REQ))
    data = b"a" * 5000
    r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(data), data)
    out = cs.on_event(w.cut_call(SEND, r, 100))
    assert out == []
    (ex,) = cs.on_event(w.call(SEND, b"3\r\nend\r\n0\r\n\r\n"))
    assert ex.response.body_cut and ex.response.body.endswith(b"end")
    assert ex.response.body_size == len(data) + 3


def test_gap_in_headers_resyncs_at_the_next_message():
    cs, counters, w = stream()
    cs.on_event(w.call(RECV, REQ))
    r = resp(b"lost")
    cs.on_event(w.call(SEND, r[:10]))
    w.lose(SEND, len(r) - 10)  # the rest of that response never arrives
    cs.on_event(w.call(RECV, b"GET /b HTTP/1.1\r\nHost: svc\r\n\r\n"))
    (ex,) = cs.on_event(w.call(SEND, resp(b"second")))
    # The request whose response was lost is not paired with the next response.
    assert ex.request.target == "/b" and ex.response.body == b"second"
    assert counters["http.gap"] == 1 and counters["http.lost_bytes"] == len(r) - 10
    assert counters["http.unpaired_request"] == 1


def test_lost_request_is_not_paired_with_the_next_response():
    cs, counters, w = stream()
    cs.on_event(w.call(RECV, REQ))
    cs.on_event(w.call(SEND, resp(b"first")))
    w.lose(RECV, len(REQ))  # a whole request lost (call_pos jumps)
    cs.on_event(w.call(RECV, b"GET /seen HTTP/1.1\r\n\r\n"))  # detected here: gap
    out = cs.on_event(w.call(SEND, resp(b"for-lost")))
    (ex,) = out + cs.on_event(w.call(SEND, resp(b"for-seen")))
    assert ex.request.target == "/seen" and ex.response.body == b"for-seen"
    assert counters["http.unpaired_response"] == 1


def test_loss_detected_by_call_pos_jump_between_messages():
    cs, counters, w = stream()
    cs.on_event(w.call(RECV, REQ))
    cs.on_event(w.call(SEND, resp(b"1")))
    w.lose(RECV, 7)
    cs.on_event(w.call(RECV, REQ))
    assert counters["http.gap"] == 1 and counters["http.lost_bytes"] == 7


def test_overlap_and_duplicates_are_trimmed():
    cs, counters, w = stream()
    r = REQ
    e1 = DataEvent(CONN, 1.0, RECV, 0, 10, 0, 0, r[:10])
    e2 = DataEvent(CONN, 1.0, RECV, 5, len(r) - 5, 0, 0, r[5:])  # overlaps 5 bytes
    e3 = DataEvent(CONN, 1.0, RECV, 0, 10, 0, 0, r[:10])  # a duplicate
    for e in (e1, e2, e3):
        cs.on_event(e)
    (ex,) = cs.on_event(DataEvent(CONN, 1.0, SEND, 0, 0, 0, 0, resp(b"ok")))
    assert ex.request.target == "/a"
    assert counters["http.duplicate_bytes"] == 15


def test_role_from_bytes_server_and_client():
    cs, _, w = stream(role=ROLE_UNKNOWN)
    cs.on_event(w.call(RECV, REQ))
    assert cs.role == ROLE_SERVER
    (ex,) = cs.on_event(w.call(SEND, resp(b"x")))
    assert ex.role == ROLE_SERVER
    cs, _, w = stream(role=ROLE_UNKNOWN)
    cs.on_event(w.call(SEND, REQ))
    assert cs.role == ROLE_CLIENT
    (ex,) = cs.on_event(w.call(RECV, resp(b"x")))
    assert ex.role == ROLE_CLIENT


def test_tls_plaintext_takes_over_after_ciphertext():
    cs, counters, w = stream(role=ROLE_UNKNOWN)
    hello = bytes([0x16, 0x03, 0x01, 0x02, 0x00]) + b"\x01" * 100
    cs.on_event(w.call(SEND, hello))
    cs.on_event(w.call(RECV, bytes([0x16, 0x03, 0x03, 0x00, 0x10]) + b"\x02" * 16))
    tls = Wire()
    cs.on_event(tls.call(SEND, REQ, flags=FLAG_TLS))
    (ex,) = cs.on_event(tls.call(RECV, resp(b"secret"), flags=FLAG_TLS))
    assert ex.tls and ex.role == ROLE_CLIENT and ex.response.body == b"secret"
    assert counters["http.tls_takeover"] == 1 and counters["http.tls_record"] == 2
    # Ciphertext seen after TLS is known is ignored.
    assert cs.on_event(w.call(SEND, hello)) == []
    assert counters["http.plaintext_after_tls"] == len(hello)


def test_close_completes_close_delimited_response_and_finishes():
    cs, counters, w = stream(role=ROLE_CLIENT)
    cs.on_event(w.call(SEND, b"GET / HTTP/1.0\r\n\r\n"))
    assert cs.on_event(w.call(RECV, b"HTTP/1.0 200 OK\r\n\r\nall of it")) == []
    (ex,) = cs.on_close(2.0)
    assert ex.response.body == b"all of it"
    assert cs.finished and cs.on_event(w.call(RECV, b"more")) == []


def test_close_counts_partial_and_unanswered():
    cs, counters, w = stream()
    cs.on_event(w.call(RECV, REQ))
    cs.on_event(w.call(RECV, b"POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"))
    assert cs.on_close(2.0) == []
    assert counters["http.expired_partial"] == 1
    assert counters["http.unanswered_request"] == 1


def test_expire_drops_and_restarts_with_resync():
    cs, counters, w = stream()
    cs.on_event(w.call(RECV, b"GET /half HTTP/1.1\r\nHost"))
    assert cs.buffered > 0
    cs.expire()
    assert cs.buffered == 0 and counters["http.expired_partial"] == 1
    assert not cs.finished
    # A late byte starts a new stream: it resyncs at the next request.
    cs.on_event(w.call(RECV, b": svc\r\n\r\nGET /new HTTP/1.1\r\n\r\n"))
    (ex,) = cs.on_event(w.call(SEND, resp(b"n")))
    assert ex.request.target == "/new"


def test_upgrade_finishes_the_connection():
    cs, counters, w = stream()
    cs.on_event(w.call(RECV, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"))
    (ex,) = cs.on_event(w.call(SEND, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi"))
    assert ex.response.status == 101 and cs.finished
    assert counters["http.upgrade"] == 1
    assert cs.on_event(w.call(RECV, b"\x81\x82abcd")) == []


def test_early_response_pairs_with_the_request_in_progress():
    cs, counters, w = stream()
    cs.on_event(w.call(RECV, b"POST /up HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000))
    (ex,) = cs.on_event(w.call(SEND, resp(b"too large", "413 Payload Too Large")))
    assert ex.request.target == "/up" and ex.request.body_cut and ex.response.status == 413
    # The rest of that body is consumed without producing another request.
    cs.on_event(w.call(RECV, b"x" * 99000))
    cs.on_event(w.call(RECV, REQ))
    (ex2,) = cs.on_event(w.call(SEND, resp(b"ok")))
    assert ex2.request.target == "/a"


def test_pending_overflow_drops_oldest():
    cs, counters, w = stream(max_pending=4)
    for k in range(6):
        cs.on_event(w.call(RECV, b"GET /%d HTTP/1.1\r\n\r\n" % k))
    assert counters["http.pending_overflow"] == 2
    (ex,) = cs.on_event(w.call(SEND, resp(b"r")))
    assert ex.request.target == "/2"


def test_head_too_large_resyncs():
    cs, counters, w = stream(max_head_bytes=1024)
    cs.on_event(w.call(RECV, b"GET /big HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 3000 + b"\r\n"))
    assert counters["http.head_too_large"] == 1
    assert cs.buffered <= 1024 + 16 * 1024
    cs.on_event(w.call(RECV, b"\r\n"))
    cs.on_event(w.call(RECV, REQ))
    (ex,) = cs.on_event(w.call(SEND, resp(b"ok")))
    assert ex.request.target == "/a"


# -- a client's response read before its request's write was emitted -------------------
# The kernel dates a send at its call's start and a receive at its return, so the
# request is never later than its response, whichever record comes first.


def test_a_response_that_arrives_before_its_request_is_paired_with_it():
    cs, counters, w = stream(ROLE_CLIENT)
    assert cs.on_event(w.call(RECV, resp(b"first"), ts=2.0)) == []
    (ex,) = cs.on_event(w.call(SEND, REQ, ts=1.0))
    assert ex.request.target == "/a" and ex.response.body == b"first"
    # Two at once (pipelined), then the usual order again.
    out = cs.on_event(w.call(RECV, resp(b"r2") + resp(b"r3"), ts=4.0))
    out += cs.on_event(w.call(SEND, b"GET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n", ts=3.0))
    out += cs.on_event(w.call(SEND, b"GET /4 HTTP/1.1\r\n\r\n", ts=5.0))
    out += cs.on_event(w.call(RECV, resp(b"r4"), ts=6.0))
    assert [(e.request.target, e.response.body) for e in out] == [("/2", b"r2"), ("/3", b"r3"), ("/4", b"r4")]
    assert not +counters - Counter({k: v for k, v in counters.items() if not k.startswith("http.un")})


def test_a_response_read_before_the_next_request_was_written_is_unpaired():
    # Joined mid-way: the answer to a request the collector never saw, then the next exchange.
    cs, counters, w = stream(ROLE_CLIENT)
    assert cs.on_event(w.call(RECV, resp(b"stale"), ts=1.0)) == []
    assert cs.on_event(w.call(SEND, REQ, ts=2.0)) == []
    (ex,) = cs.on_event(w.call(RECV, resp(b"fresh"), ts=3.0))
    assert ex.response.body == b"fresh" and counters["http.unpaired_response"] == 1
    # An early response still waiting when the connection goes idle is counted.
    assert cs.on_event(w.call(RECV, resp(b"orphan"), ts=4.0)) == []
    assert cs.buffered >= len(b"orphan")
    cs.expire()
    assert counters["http.unpaired_response"] == 2
