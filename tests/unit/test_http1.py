"""HTTP/1.x reader details: body limits, content decoding, bad framing values, resync."""

from __future__ import annotations

import gzip
import zlib
from collections import Counter

import brotli
import pytest

from akto_collector.events import RECV, ROLE_SERVER, SEND
from akto_collector.protocols.streams import ConnectionStream, CoreLimits
from test_http_replay import CONN, Wire

REQ = b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n"


def exchange(response: bytes, request: bytes = REQ, **limits):
    counters = Counter()
    cs = ConnectionStream(CONN, CoreLimits(**limits), counters, role_hint=ROLE_SERVER)
    w = Wire()
    out = cs.on_event(w.call(RECV, request)) + cs.on_event(w.call(SEND, response))
    return out, counters, cs


def encoded(body: bytes, coding: str) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n%s" % (coding.encode(), len(body), body)


def test_body_beyond_limit_is_cut_with_true_size():
    body = b"x" * 5000
    (ex,), counters, _ = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + body, max_body_bytes=1000)
    assert ex.response.body == body[:1000] and ex.response.body_cut and ex.response.body_size == 5000
    assert counters["http.body_cut"] == 1


@pytest.mark.parametrize("coding,compress", [
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda d: (lambda c: c.compress(d) + c.flush())(zlib.compressobj(wbits=-15))),
    ("br", brotli.compress),
    ("gzip, br", lambda d: brotli.compress(gzip.compress(d))),
])
def test_content_encodings_are_undone(coding, compress):
    data = b'{"k":"' + b"v" * 3000 + b'"}'
    (ex,), counters, _ = exchange(encoded(compress(data), coding))
    assert ex.response.body == data and not ex.response.body_cut
    assert counters["http.decompress_error"] == 0


def test_concatenated_gzip_members():
    (ex,), _, _ = exchange(encoded(gzip.compress(b"one,") + gzip.compress(b"two"), "gzip"))
    assert ex.response.body == b"one,two"


@pytest.mark.parametrize("coding,compress", [("gzip", gzip.compress), ("br", brotli.compress), ("deflate", zlib.compress)])
def test_decompression_bomb_is_bounded(coding, compress):
    bomb = compress(b"\0" * (50 << 20))  # 50 MB of zeros, a few KB compressed
    (ex,), _, _ = exchange(encoded(bomb, coding), max_body_bytes=64 << 10)
    assert len(ex.response.body) == 64 << 10 and ex.response.body_cut
    assert ex.response.body_size == len(bomb)


def test_corrupt_compressed_body_keeps_raw_bytes_and_counts():
    raw = b"this is not gzip at all"
    (ex,), counters, _ = exchange(encoded(raw, "gzip"))
    assert ex.response.body == raw and not ex.response.body_cut
    assert counters["http.decompress_error"] == 1


def test_unknown_coding_keeps_raw_bytes():
    (ex,), counters, _ = exchange(encoded(b"zzz", "zstd"))
    assert ex.response.body == b"zzz" and counters["http.decompress_unsupported"] == 1


def test_cut_compressed_body_keeps_what_decoded():
    data = bytes(range(256)) * 400
    gz = gzip.compress(data, compresslevel=1)
    r = encoded(gz, "gzip")
    counters = Counter()
    cs = ConnectionStream(CONN, CoreLimits(), counters, role_hint=ROLE_SERVER)
    w = Wire()
    cs.on_event(w.call(RECV, REQ))
    (ex,) = cs.on_event(w.cut_call(SEND, r, len(r) // 2))
    assert ex.response.body_cut and 0 < len(ex.response.body) < len(data)
    assert data.startswith(ex.response.body)


@pytest.mark.parametrize("value", [b"-1", b"abc", b"1e3", b"99999999999999999999999", b"5, 6"])
def test_bad_content_length_is_malformed_not_an_exception(value):
    out, counters, cs = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\nhello")
    assert out == [] and counters["http.malformed"] == 1


def test_repeated_equal_content_length_is_accepted():
    (ex,), _, _ = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok")
    assert ex.response.body == b"ok"


def test_huge_content_length_does_not_allocate():
    out, counters, cs = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999999999\r\n\r\n" + b"a" * 10000,
                                 max_body_bytes=100)
    assert out == [] and cs.buffered <= 100


def test_tls_records_and_binary_are_skipped_with_counters():
    counters = Counter()
    cs = ConnectionStream(CONN, CoreLimits(), counters)
    w = Wire()
    cs.on_event(w.call(SEND, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(100)))
    assert counters["http.tls_record"] == 1
    cs.on_event(w.call(RECV, b"\x00\x00\x00\x10binary-protocol\xff" * 20))
    assert counters["http.resync_bytes"] > 0 and cs.buffered < 64


def test_garbage_after_a_message_resyncs_to_the_next():
    out, counters, cs = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokNOT HTTP AT ALL\r\n")
    assert len(out) == 1 and counters["http.malformed"] == 1


def test_head_without_end_is_bounded():
    counters = Counter()
    cs = ConnectionStream(CONN, CoreLimits(max_head_bytes=4096), counters, role_hint=ROLE_SERVER)
    w = Wire()
    cs.on_event(w.call(RECV, b"GET / HTTP/1.1\r\n"))
    for _ in range(100):
        cs.on_event(w.call(RECV, b"X-A: " + b"b" * 100 + b"\r\n"))
        assert cs.buffered <= 4096 + 200
    assert counters["http.head_too_large"] >= 1


def test_chunk_extensions_and_bad_chunk_size():
    (ex,), _, _ = exchange(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 ; a=b\r\nok\r\n0\r\n\r\n")
    assert ex.response.body == b"ok"
    (ex,), counters, _ = exchange(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n")
    assert ex.response.body == b"ok" and ex.response.body_cut and counters["http.malformed"] == 1


def test_response_to_connect_failure_is_normal():
    out, counters, cs = exchange(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
                                 request=b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n")
    assert len(out) == 1 and not cs.finished
