"""The protocol axis: the parser is chosen per connection, a connection switches once,
and HTTP/1 body framing is one pure function of the head."""

from __future__ import annotations

from collections import Counter

import pytest

from akto_collector.events import RECV, ROLE_CLIENT, ROLE_SERVER, SEND, DataEvent
from akto_collector.protocols import H2_PREFACE, PROTO_HTTP1, PROTO_HTTP2, PROTO_UNKNOWN
from akto_collector.protocols.http1 import (
    BODY_CHUNKED,
    BODY_INTERIM,
    BODY_LENGTH,
    BODY_NONE,
    BODY_UNTIL_CLOSE,
    BODY_UPGRADE,
    Http1Parser,
    body_framing,
)
from akto_collector.protocols.http2 import Http2Parser
from akto_collector.protocols.streams import ConnectionStream, CoreLimits
from test_http_replay import CONN, Wire


@pytest.mark.parametrize("method,status,cl,chunked,framing", [
    (None, None, None, False, BODY_NONE),  # a request without a body
    (None, None, 0, False, BODY_NONE),
    (None, None, 10, False, BODY_LENGTH),
    (None, None, 10, True, BODY_CHUNKED),  # chunked wins over Content-Length
    ("GET", 200, 10, False, BODY_LENGTH),
    ("GET", 200, 0, False, BODY_NONE),
    ("GET", 200, None, True, BODY_CHUNKED),
    ("GET", 200, None, False, BODY_UNTIL_CLOSE),
    ("HEAD", 200, 10, False, BODY_NONE),
    ("GET", 204, None, False, BODY_NONE),
    ("GET", 304, 10, False, BODY_NONE),
    ("GET", 100, None, False, BODY_INTERIM),
    ("GET", 103, None, False, BODY_INTERIM),
    ("GET", 101, None, False, BODY_UPGRADE),
    ("CONNECT", 200, None, False, BODY_UPGRADE),
    ("CONNECT", 407, 5, False, BODY_LENGTH),  # a refused tunnel is an ordinary response
    (None, 200, 5, False, BODY_LENGTH),  # the request's method unknown (lost)
])
def test_body_framing(method, status, cl, chunked, framing):
    assert body_framing(method, status, cl, chunked) == framing


def stream(role=ROLE_SERVER):
    counters = Counter()
    return ConnectionStream(CONN, CoreLimits(), counters, role_hint=role), counters, Wire()


def test_the_kernel_protocol_id_picks_the_parser():
    for proto, cls in ((PROTO_HTTP1, Http1Parser), (PROTO_HTTP2, Http2Parser)):
        cs, _, w = stream()
        ev = w.call(RECV, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")._replace(proto=proto)
        cs.on_event(ev)
        assert type(cs._parser) is cls and cs.proto == proto


def test_without_the_kernel_word_the_first_bytes_decide():
    cs, _, w = stream()
    cs.on_event(w.call(RECV, H2_PREFACE[:10]))
    assert cs.proto == PROTO_HTTP2
    cs, _, w = stream()
    cs.on_event(w.call(RECV, b"GET / HTTP/1.1\r\n"))
    assert cs.proto == PROTO_HTTP1


def test_an_http2_connection_is_not_parsed_as_http1():
    cs, counters, w = stream(role=ROLE_SERVER)
    out = cs.on_event(w.call(RECV, H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")._replace(proto=PROTO_HTTP2))
    assert out == [] and cs.proto == PROTO_HTTP2
    assert counters["http.malformed"] == 0 and counters["http.resync_bytes"] == 0


H2C_REQUEST = (b"GET /up HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
SERVER_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@pytest.mark.parametrize("role,req_dir", [(ROLE_SERVER, RECV), (ROLE_CLIENT, SEND)])
def test_upgrade_to_h2c_continues_as_http2_with_the_request_on_stream_1(role, req_dir):
    cs, counters, w = stream(role)
    resp_dir = SEND if req_dir == RECV else RECV
    assert cs.on_event(w.call(req_dir, H2C_REQUEST)) == []
    # The 101 and the server's first frames may come in one write.
    out = cs.on_event(w.call(resp_dir, SWITCHING + SERVER_SETTINGS))
    assert out == []  # the 101 is no answer: stream 1's response will be
    assert cs.proto == PROTO_HTTP2 and not cs.finished
    assert counters["stream.protocol_switch"] == 1 and counters["http.upgrade"] == 1
    assert cs.role == role


def test_websocket_upgrade_emits_its_pair_and_ends_the_capture():
    cs, counters, w = stream()
    cs.on_event(w.call(RECV, b"GET /ws HTTP/1.1\r\nHost: svc\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"))
    (ex,) = cs.on_event(w.call(SEND, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"))
    assert ex.response.status == 101 and cs.finished
    assert cs.on_event(w.call(RECV, b"\x81\x85frame")) == []
    assert counters["stream.protocol_switch"] == 1


def test_data_event_protocol_defaults_to_unknown():
    ev = DataEvent(CONN, 0.0, RECV, 0, 1, 0, 0, b"x")
    assert ev.proto == PROTO_UNKNOWN
