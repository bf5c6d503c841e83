"""Http2Parser on whole connections: h2's client and server talking in memory, fed from both roles.

Also holds the helpers the gRPC tests import: ``Talk`` (two h2 connections
recording each write as a step), ``Raw`` (hand-made frames, for what h2 will
not send), ``run`` (steps into parser calls, in any chunking) and ``summary``.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter

import orjson
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived
from h2.exceptions import StreamClosedError
from h2.settings import SettingCodes
from hpack import Encoder, NeverIndexedHeaderTuple
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from akto_collector.events import (FLAG_CUT, FLAG_SHED, RECV, ROLE_CLIENT, ROLE_SERVER, ROLE_UNKNOWN, SEND, ConnId,
                                   ConnMeta, DataEvent, HttpRequest)
from akto_collector.message import MessageEncoder
from akto_collector.protocols import H2_PREFACE, PROTO_HTTP2, CoreLimits
from akto_collector.protocols.http2 import Http2Parser
from akto_collector.protocols.streams import ConnectionStream
from test_http_replay import Wire

CONN = ConnId(77, 9, 1)
CURL = [("user-agent", "curl/8.5.0"), ("accept", "*/*")]
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Talk:
    """An h2 client and server in memory; every write of either is one step ("c" or "s", bytes)."""

    def __init__(self, client_settings=None, server_settings=None):
        self.c = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.s = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.steps: list = []
        self.c.initiate_connection()
        self.s.initiate_connection()
        self.flush()
        if client_settings:
            self.c.update_settings(client_settings)
        if server_settings:
            self.s.update_settings(server_settings)
        self.flush()

    def flush(self) -> None:
        moved = True
        while moved:
            moved = False
            for side, conn, peer in (("c", self.c, self.s), ("s", self.s, self.c)):
                data = conn.data_to_send()
                if data:
                    moved = True
                    self.steps.append((side, data))
                    for ev in peer.receive_data(data):
                        if isinstance(ev, DataReceived) and ev.flow_controlled_length:
                            try:
                                peer.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                            except StreamClosedError:
                                pass

    def body(self, conn, sid: int, data: bytes, end: bool, frame: int = 1 << 30, pad=None) -> None:
        while data:
            n = min(len(data), conn.local_flow_control_window(sid), conn.max_outbound_frame_size, frame)
            if n <= 0:
                self.flush()
                continue
            conn.send_data(sid, data[:n], end_stream=end and n == len(data), pad_length=pad)
            data = data[n:]
            self.flush()

    def request(self, headers, body: bytes = b"", trailers=None, end: bool = True, **kw) -> int:
        sid = self.c.get_next_available_stream_id()
        self.c.send_headers(sid, headers, end_stream=end and not body and not trailers, **kw)
        self.flush()
        if body:
            self.body(self.c, sid, body, end and not trailers)
        if trailers:
            self.c.send_headers(sid, trailers, end_stream=True)
            self.flush()
        return sid

    def respond(self, sid: int, headers, body: bytes = b"", trailers=None, end: bool = True, **kw) -> None:
        self.s.send_headers(sid, headers, end_stream=end and not body and not trailers)
        self.flush()
        if body:
            self.body(self.s, sid, body, end and not trailers, **kw)
        if trailers:
            self.s.send_headers(sid, trailers, end_stream=True)
            self.flush()


class Raw:
    """Hand-made frames with an HPACK encoder per side (padding on HEADERS, bad sequences)."""

    def __init__(self, preface: bool = True):
        self.enc = {"c": Encoder(), "s": Encoder()}
        self.steps: list = []
        if preface:
            self.steps.append(("c", H2_PREFACE + SettingsFrame(0).serialize()))
            self.steps.append(("s", SettingsFrame(0).serialize()))

    def block(self, side: str, headers) -> bytes:
        return self.enc[side].encode(headers)

    def headers(self, side, sid, headers, end_stream=False, pad=None, priority=False, split=None) -> None:
        block = self.block(side, headers)
        flags = {"END_STREAM"} if end_stream else set()
        parts = [block] if split is None else [block[i:i + split] for i in range(0, len(block), split)]
        f = HeadersFrame(sid, parts[0])
        f.flags = set(flags)
        if len(parts) == 1:
            f.flags.add("END_HEADERS")
        if pad is not None:
            f.flags.add("PADDED")
            f.pad_length = pad
        if priority:
            f.flags.add("PRIORITY")
            f.depends_on, f.stream_weight, f.exclusive = 0, 15, False
        out = f.serialize()
        for k, p in enumerate(parts[1:], 2):
            c = ContinuationFrame(sid, p)
            if k == len(parts):
                c.flags.add("END_HEADERS")
            out += c.serialize()
        self.steps.append((side, out))

    def data(self, side, sid, data, end_stream=False, pad=None) -> None:
        f = DataFrame(sid, data)
        if end_stream:
            f.flags.add("END_STREAM")
        if pad is not None:
            f.flags.add("PADDED")
            f.pad_length = pad
        self.steps.append((side, f.serialize()))

    def raw(self, side, data: bytes) -> None:
        self.steps.append((side, data))


def directions(role: int) -> dict:
    """Which direction each side's writes are, seen from the traced process."""
    if role == ROLE_CLIENT:
        return {"c": SEND, "s": RECV}
    return {"c": RECV, "s": SEND}


def run(steps, role=ROLE_SERVER, hint=None, limits=None, cuts=None, parser=None, counters=None, ts=1.0):
    """Feed ``steps`` (("c"|"s", bytes) or ("gap", side, n)) to a parser; (exchanges, counters, parser).

    ``cuts(i, data)`` gives the cut points splitting step ``i`` into feeds.
    """
    counters = Counter() if counters is None else counters
    if parser is None:
        parser = Http2Parser(CONN, limits or CoreLimits(), counters, role if hint is None else hint)
    dirs = directions(role)
    out = []
    for i, step in enumerate(steps):
        if step[0] == "gap":
            parser.gap(dirs[step[1]], step[2])
            continue
        side, data = step
        bounds = [0, *(cuts(i, data) if cuts else ()), len(data)]
        for a, b in zip(bounds, bounds[1:]):
            if b > a:
                parser.feed(dirs[side], data[a:b], ts, a == 0)
                out += parser.take()
    return out, counters, parser


def summary(ex):
    q, r = ex.request, ex.response
    return (q.method, q.target, q.version, q.headers, q.body, q.body_cut, q.body_size, q.grpc_sizes,
            r.status, r.reason, r.headers, r.body, r.body_cut, r.body_size, r.grpc_sizes, ex.extra, ex.role)


def frames(data: bytes, start: int = 0):
    """(offset, type, flags, stream, length) of the whole frames in ``data`` from ``start``."""
    out = []
    i = start
    while i + 9 <= len(data):
        ln = int.from_bytes(data[i:i + 3], "big")
        out.append((i, data[i + 3], data[i + 4], int.from_bytes(data[i + 5:i + 9], "big") & 0x7FFFFFFF, ln))
        i += 9 + ln
    return out


def get(path: str, extra=()):
    return [(":method", "GET"), (":path", path), (":scheme", "https"), (":authority", "api.example.com"),
            *CURL, *extra]


def ok(body: bytes, ctype: str = "application/json", extra=()):
    return [(":status", "200"), ("content-type", ctype), ("content-length", str(len(body))), *extra]


JSON = orjson.dumps([{"id": i, "name": f"item-{i}", "price": 12.5} for i in range(40)])


def basic_talk() -> Talk:
    t = Talk()
    sid = t.request(get("/api/items?page=2"))
    t.respond(sid, ok(JSON), JSON)
    return t


# -- pairs ------------------------------------------------------------------------


@pytest.mark.parametrize("role", [ROLE_SERVER, ROLE_CLIENT])
@pytest.mark.parametrize("hint", [None, ROLE_UNKNOWN])
def test_get_pair_from_both_roles(role, hint):
    out, counters, parser = run(basic_talk().steps, role, hint)
    (ex,) = out
    q, r = ex.request, ex.response
    assert (q.method, q.target, q.version) == ("GET", "/api/items?page=2", "HTTP/2.0")
    assert q.headers == [("host", "api.example.com"), *CURL]
    assert q.body == b"" and not q.body_cut and q.grpc_sizes is None
    assert (r.version, r.status, r.reason) == ("HTTP/2.0", 200, "OK")
    assert r.headers == [("content-type", "application/json"), ("content-length", str(len(JSON)))]
    assert r.body == JSON and r.body_size == len(JSON) and not r.body_cut
    assert ex.role == role == parser.role and ex.extra is None and ex.conn == CONN
    assert not [k for k in counters if "dropped" in k or "unknown" in k]
    assert parser.buffered <= 2 * 4096 + 200  # the two HPACK tables


def test_message_is_the_akto_contract():
    (ex,) = run(basic_talk().steps)[0]
    meta = ConnMeta(pid=77, fd=9, comm="srv", local="10.0.0.2:8443", peer="10.0.0.1:5000")
    _key, value = MessageEncoder().encode(ex, meta)
    msg = json.loads(value)
    assert (msg["method"], msg["path"], msg["type"]) == ("GET", "/api/items?page=2", "HTTP/2.0")
    assert json.loads(msg["requestHeaders"])["host"] == "api.example.com"
    assert (msg["statusCode"], msg["status"]) == ("200", "200 OK")
    assert json.loads(msg["responsePayload"])[0]["name"] == "item-0"
    assert "streamIncomplete" not in msg


def test_missing_authority_falls_back_to_host_then_to_the_address():
    r = Raw()  # h2 refuses to send a request with neither
    r.headers("c", 1, [(":method", "GET"), (":path", "/a"), (":scheme", "http"), ("host", "svc.local")], True)
    r.headers("s", 1, [(":status", "200")], end_stream=True)
    r.headers("c", 3, [(":method", "GET"), (":path", "/b"), (":scheme", "http")], end_stream=True)
    r.headers("s", 3, [(":status", "200")], end_stream=True)
    r.headers("c", 5, [(":method", "GET"), (":path", "/c"), (":authority", "a:1"), ("host", "h:2")], True)
    r.headers("s", 5, [(":status", "200")], end_stream=True)
    a, b, c = run(r.steps)[0]
    assert a.request.headers == [("host", "svc.local")]
    assert b.request.headers == []
    assert c.request.headers == [("host", "a:1")]  # :authority wins
    meta = ConnMeta(pid=1, fd=2, local="10.0.0.2:80", peer="10.0.0.1:5")
    assert json.loads(json.loads(MessageEncoder().encode(b, meta)[1])["requestHeaders"]) == {"host": "10.0.0.2:80"}


def test_post_with_json_body_and_gzip_response():
    t = Talk()
    body = orjson.dumps({"user": "alice", "items": [1, 2, 3]})
    sid = t.request([(":method", "POST"), (":path", "/orders"), (":scheme", "https"), (":authority", "shop"),
                     ("content-type", "application/json")], body)
    z = gzip.compress(JSON)
    t.respond(sid, [(":status", "201"), ("content-encoding", "gzip")], z)
    (ex,) = run(t.steps)[0]
    assert ex.request.method == "POST" and ex.request.body == body and ex.request.body_size == len(body)
    assert ex.response.status == 201 and ex.response.reason == "Created"
    assert ex.response.body == JSON and ex.response.body_size == len(z) and not ex.response.body_cut


def test_many_concurrent_streams_answered_out_of_order_with_interleaved_data():
    t = Talk()
    sids = [t.request(get(f"/item/{k}")) for k in range(20)]
    bodies = {sid: (b"%d:" % sid) * (300 + sid) for sid in sids}
    for sid in reversed(sids):
        t.s.send_headers(sid, ok(bodies[sid]))
    t.flush()
    for part in range(3):  # round robin: DATA frames of all streams interleaved
        for sid in sids:
            b = bodies[sid]
            n = len(b) // 3 + 1
            t.s.send_data(sid, b[part * n:(part + 1) * n], end_stream=part == 2)
    t.flush()
    out, counters, _ = run(t.steps)
    assert len(out) == 20
    for ex in out:
        sid = int(ex.request.target.rsplit("/", 1)[1]) * 2 + 1
        assert ex.response.body == bodies[sid] and ex.extra is None


def test_open_streams_are_bounded_oldest_dropped():
    t = Talk()
    sids = [t.request(get(f"/s/{k}")) for k in range(6)]
    for sid in sids:
        t.respond(sid, ok(b"x"), b"x")
    out, counters, _ = run(t.steps, limits=CoreLimits(max_streams=4))
    assert [ex.request.target for ex in out] == ["/s/2", "/s/3", "/s/4", "/s/5"]
    assert counters["http2.dropped.too_many_streams"] == 2 and counters["http2.unpaired_response"] == 2


def test_trailers_are_merged_into_the_response_headers():
    t = Talk()
    sid = t.request(get("/t"))
    t.respond(sid, [(":status", "200")], b"data", trailers=[("x-checksum", "abc"), ("x-n", "1")])
    (ex,) = run(t.steps)[0]
    assert ex.response.headers == [("x-checksum", "abc"), ("x-n", "1")]
    assert ex.response.body == b"data"


def test_rst_stream_ends_the_pair_marked_and_without_response_is_counted():
    t = Talk()
    s1 = t.request(get("/slow"))
    t.s.send_headers(s1, [(":status", "200")])
    t.s.send_data(s1, b"partial")
    t.flush()
    t.c.reset_stream(s1, ErrorCodes.CANCEL)
    t.flush()
    s2 = t.request(get("/never"))
    t.c.reset_stream(s2, ErrorCodes.CANCEL)
    t.flush()
    out, counters, parser = run(t.steps)
    (ex,) = out
    assert ex.extra == {"streamReset": "CANCEL"}
    assert ex.response.body == b"partial" and ex.response.body_cut
    assert counters["http2.unanswered_stream"] == 1 and counters["http2.stream_reset"] == 2
    assert parser.buffered < 10000


def test_padding_and_priority():
    t = Talk()
    sid = t.request(get("/p"), priority_weight=200, priority_depends_on=0)
    t.c.prioritize(sid, weight=16)
    t.flush()
    t.respond(sid, [(":status", "200")], b"y" * 1000, pad=50)
    r = Raw()
    r.headers("c", 1, get("/raw"), end_stream=True, pad=17, priority=True)
    r.headers("s", 1, [(":status", "204")], pad=3)
    r.data("s", 1, b"", end_stream=True, pad=9)
    r.raw("c", PriorityFrame(3, depends_on=1, stream_weight=7).serialize())
    for steps, path, body in ((t.steps, "/p", b"y" * 1000), (r.steps, "/raw", b"")):
        (ex,) = run(steps)[0]
        assert ex.request.target == path and ex.response.body == body


def test_continuation_frames_carry_large_header_blocks():
    big = "".join(random.Random(1).choice("0123456789abcdef") for _ in range(30000))
    t = Talk()
    sid = t.request(get("/big", [("x-big", big)]))
    t.respond(sid, [(":status", "200"), ("x-echo", big)], b"ok")
    types = {f[1] for side, data in t.steps for f in frames(data, 24 if data.startswith(H2_PREFACE) else 0)}
    assert 9 in types  # h2 split the blocks
    (ex,) = run(t.steps)[0]
    assert ex.request.headers[-1] == ("x-big", big) and ex.response.headers[-1] == ("x-echo", big)
    r = Raw()
    r.headers("c", 1, get("/split", [("x-a", "1" * 300)]), end_stream=True, split=7)
    r.headers("s", 1, [(":status", "200"), ("x-b", "2" * 300)], end_stream=True, split=5)
    (ex,) = run(r.steps)[0]
    assert ex.request.target == "/split" and ex.response.headers == [("x-b", "2" * 300)]


def test_push_promise_is_counted_and_ignored_and_the_tables_stay_in_step():
    t = Talk()
    sid = t.request(get("/page"))
    t.s.push_stream(sid, 2, [(":method", "GET"), (":path", "/style.css"), (":scheme", "https"),
                             (":authority", "api.example.com")])
    t.s.send_headers(2, [(":status", "200"), ("content-type", "text/css")])
    t.s.send_data(2, b"body{}", end_stream=True)
    t.flush()
    t.respond(sid, ok(b"<html>", "text/html"), b"<html>")
    s2 = t.request(get("/after"))
    t.respond(s2, ok(b"2", "text/css"), b"2")
    out, counters, _ = run(t.steps)
    assert [(e.request.target, e.response.body) for e in out] == [("/page", b"<html>"), ("/after", b"2")]
    assert out[1].response.headers[0] == ("content-type", "text/css")
    assert counters["http2.push_promise"] == 1 and counters["http2.unpaired_response"] == 0
    assert counters["http2.fields_unknown"] == 0


def test_ping_settings_table_size_and_goaway():
    t = Talk(client_settings={SettingCodes.HEADER_TABLE_SIZE: 256})
    t.c.ping(b"12345678")
    t.flush()
    sids = [t.request(get(f"/g/{k}", [("x-long", "v" * 100)])) for k in range(4)]
    for sid in sids[:3]:
        t.respond(sid, ok(b"1", extra=[("x-r", "r" * 120)]), b"1")
    t.s.close_connection(last_stream_id=sids[2])
    t.flush()
    out, counters, parser = run(t.steps)
    assert [e.request.target for e in out] == ["/g/0", "/g/1", "/g/2"]
    assert all(e.response.headers[-1] == ("x-r", "r" * 120) for e in out)
    assert counters["http2.goaway"] == 1 and counters["http2.unanswered_stream"] == 1
    assert counters["http2.hpack_table_size_over_limit"] == 0 and counters["http2.hpack_error"] == 0
    t0 = Talk(client_settings={SettingCodes.HEADER_TABLE_SIZE: 0})
    for k in range(3):
        sid = t0.request(get(f"/z/{k}"))
        t0.respond(sid, ok(b"z"), b"z")
    assert [e.request.target for e in run(t0.steps)[0]] == ["/z/0", "/z/1", "/z/2"]


def test_a_size_update_above_the_negotiated_limit_is_counted():
    r = Raw()
    r.raw("c", SettingsFrame(0, settings={SettingCodes.HEADER_TABLE_SIZE: 100}).serialize())
    r.enc["s"].header_table_size = 8192  # the server ignores the client's limit
    r.headers("c", 1, get("/a"), end_stream=True)
    r.headers("s", 1, [(":status", "200")], end_stream=True)
    out, counters, _ = run(r.steps)
    assert counters["http2.hpack_table_size_over_limit"] == 1
    assert [e.response.status for e in out] == [200]  # the static :status still reads after the reset
    # Joined mid-way (no preface) the limit is unknown: not flagged.
    out, counters, _ = run(r.steps[2:])
    assert counters["http2.hpack_table_size_over_limit"] == 0


# -- chunkings ----------------------------------------------------------------------


def rich_talk() -> Talk:
    t = Talk()
    s1 = t.request(get("/a"))
    t.respond(s1, ok(JSON), JSON)
    s2 = t.request([(":method", "POST"), (":path", "/b"), (":scheme", "https"), (":authority", "x")],
                   b"q" * 5000)
    t.respond(s2, [(":status", "200")], gzip.compress(b"z" * 3000), trailers=[("x-t", "1")])
    s3 = t.request(get("/c", [("x-big", "b" * 20000)]))
    t.respond(s3, [(":status", "404")], b"nope", pad=20)
    return t


RICH = rich_talk().steps
RICH_OUT = [summary(e) for e in run(RICH)[0]]


def test_rich_talk_whole():
    assert [s[1] for s in RICH_OUT] == ["/a", "/b", "/c"]
    assert RICH_OUT[1][4] == b"q" * 5000 and RICH_OUT[1][10] == [("x-t", "1")]


@pytest.mark.parametrize("role", [ROLE_SERVER, ROLE_CLIENT])
def test_one_byte_feeds(role):
    out, counters, _ = run(RICH, role, cuts=lambda i, d: range(1, len(d)))
    assert [summary(e)[:-1] for e in out] == [s[:-1] for s in RICH_OUT]


@FAST
@given(st.data())
def test_random_chunkings_give_the_same_pairs(data):
    def cuts(i, d):
        k = data.draw(st.integers(0, 6))
        return sorted(data.draw(st.lists(st.integers(1, max(1, len(d) - 1)), min_size=k, max_size=k)))
    out, counters, parser = run(RICH, cuts=cuts)
    assert [summary(e) for e in out] == RICH_OUT
    assert not [k for k in counters if "dropped" in k]


def test_through_connection_stream_the_preface_decides_the_protocol():
    counters = Counter()
    cs = ConnectionStream(CONN, CoreLimits(), counters)
    w = Wire(CONN)
    out = []
    for side, data in RICH:
        out += cs.on_event(w.call(RECV if side == "c" else SEND, data))
    assert cs.proto == PROTO_HTTP2 and cs.role == ROLE_SERVER
    assert [summary(e) for e in out] == RICH_OUT


# -- joined mid-way -----------------------------------------------------------------


def long_talk(n: int = 24) -> tuple[Talk, dict]:
    """Requests with a new literal path each and indexed common fields; the truth per path."""
    t = Talk()
    truth = {}
    for k in range(n):
        path = f"/items/{k}?q={k * 7}"
        sid = t.request(get(path, [("x-trace", f"t{k % 5}")]))
        body = b'{"k": %d}' % k
        t.respond(sid, ok(body, extra=[("etag", f'"{k}"')]), body)
        truth[path] = (get(path, [("x-trace", f"t{k % 5}")]), ok(body, extra=[("etag", f'"{k}"')]), body)
    return t, truth


def check_known(ex, truth) -> None:
    """A pair emitted from a partial table: what it says is exactly right, only fields may be missing."""
    req_h, resp_h, body = truth[ex.request.target]
    assert ex.request.method == "GET" and ex.response.status == 200
    assert ex.response.body == body or ex.response.body_cut
    full = [("host", "api.example.com"), *[h for h in req_h if h[0][0] != ":"]]
    it = iter(full)
    assert all(h in it for h in ex.request.headers)  # a sub-sequence of the truth
    it = iter([h for h in resp_h if h[0][0] != ":"])
    assert all(h in it for h in ex.response.headers)


@pytest.mark.parametrize("hint", [ROLE_SERVER, ROLE_UNKNOWN])
def test_joined_mid_way_at_every_step(hint):
    t, truth = long_talk()
    steps = t.steps
    for j in range(2, len(steps)):
        out, counters, parser = run(steps[j:], hint=hint)
        for ex in out:
            check_known(ex, truth)
        # Every request whose HEADERS came after joining is emitted: its path is a literal.
        seen = sum(1 for s, d in steps[j:] for f in frames(d) if s == "c" and f[1] == 1)
        assert len(out) == seen
        assert counters["http2.hpack_error"] == 0 and counters["http2.hpack_bad_index"] == 0


@FAST
@given(st.data())
def test_joined_mid_way_at_independent_frame_boundaries(data):
    t, truth = long_talk(12)
    per = {"c": b"".join(d for s, d in t.steps if s == "c")[24:], "s": b"".join(d for s, d in t.steps if s == "s")}
    starts = {side: data.draw(st.sampled_from([f[0] for f in frames(per[side])])) for side in "cs"}
    steps = [("c", per["c"][starts["c"]:]), ("s", per["s"][starts["s"]:])]
    if data.draw(st.booleans()):
        steps.reverse()
    out, counters, _ = run(steps, hint=ROLE_UNKNOWN)
    for ex in out:
        check_known(ex, truth)
    assert counters["http2.hpack_error"] == 0


def test_joined_mid_way_indexed_fields_are_counted_unknown_and_new_literals_known():
    t, truth = long_talk()
    out, counters, _ = run(t.steps[20:])
    assert out and counters["http2.fields_unknown"] > 0
    for ex in out:
        check_known(ex, truth)
        k = ex.request.target.split("/")[2].split("?")[0]
        assert ex.response.headers[-1] == ("etag", f'"{k}"')  # a new literal: known
        assert ex.request.headers == []  # every request field was inserted before joining
    assert {e.request.target for e in out} <= set(truth)


# -- gaps ---------------------------------------------------------------------------


def split_at(steps, side, frame_type, nth=0):
    """The index of the step holding the ``nth`` frame of ``frame_type`` written by ``side``, and the frame."""
    seen = 0
    for i, (s, d) in enumerate(steps):
        if s != side:
            continue
        for f in frames(d, 24 if d.startswith(H2_PREFACE) else 0):
            if f[1] == frame_type:
                if seen == nth:
                    return i, f
                seen += 1
    raise AssertionError("no such frame")


def with_gap(steps, i, a, b, side):
    """Step ``i`` with its bytes [a, b) lost."""
    d = steps[i][1]
    return steps[:i] + [(side, d[:a]), ("gap", side, b - a), (side, d[b:])] + steps[i + 1:]


def test_gap_inside_data_skips_exactly_and_cuts_the_body():
    t = Talk()
    s1 = t.request(get("/big"))
    body = bytes(range(256)) * 40
    t.respond(s1, [(":status", "200")], body)
    s2 = t.request(get("/next"))
    t.respond(s2, [(":status", "200")], b"whole")
    i, (off, _t, _f, _s, ln) = split_at(t.steps, "s", 0)
    steps = with_gap(t.steps, i, off + 9 + 100, off + 9 + 1100, "s")
    out, counters, _ = run(steps)
    a, b = out
    assert a.response.body == body[:100] + body[1100:] and a.response.body_cut
    assert a.response.body_size == len(body)
    assert b.response.body == b"whole" and not b.response.body_cut
    assert counters["http2.resync"] == 0


@pytest.mark.parametrize("side", ["c", "s"])
def test_gap_across_frames_resyncs_and_the_table_refills(side):
    t, truth = long_talk()
    i, (off, *_rest) = split_at(t.steps, side, 1, 5)
    d = t.steps[i][1]
    steps = t.steps[:i] + [(side, d[:off + 3]), ("gap", side, len(d) - off - 3 + 50)] + t.steps[i + 1:]
    # The gap ran 50 bytes into the next write of that side: trim them.
    k = next(k for k in range(i + 3, len(steps)) if steps[k][0] == side)
    steps[k] = (side, steps[k][1][50:])
    out, counters, _ = run(steps)
    assert counters["http2.resync"] == 1 and counters["http2.resync_bytes"] > 0
    for ex in out:
        check_known(ex, truth)
    assert len(out) >= len(truth) - 3  # the lost one and the one resync skipped over
    assert "/items/23?q=161" in {e.request.target for e in out}


@pytest.mark.parametrize("side", ["c", "s"])
def test_gap_inside_a_header_block_makes_the_table_unknown(side):
    t, truth = long_talk()
    i, (off, _t, _f, _s, ln) = split_at(t.steps, side, 1, 8)
    steps = with_gap(t.steps, i, off + 9 + 1, off + 9 + 3, side)
    out, counters, _ = run(steps)
    assert counters["http2.hpack_table_lost"] >= 1 and counters["http2.resync"] == 0
    assert counters["http2.fields_unknown"] > 0
    for ex in out:
        check_known(ex, truth)
    paths = {e.request.target for e in out}
    assert "/items/8?q=56" not in paths and "/items/23?q=161" in paths
    assert len(out) == len(truth) - 1


def test_gap_in_the_middle_of_resync_keeps_resyncing():
    t, truth = long_talk()
    steps = t.steps[:7] + [("gap", "s", 10), ("s", b"\x00\x01\x02" * 5), ("gap", "s", 3)] + t.steps[7:]
    out, counters, _ = run(steps)
    for ex in out:
        check_known(ex, truth)
    assert counters["http2.resync"] == 1 and len(out) >= len(truth) - 4


@FAST
@given(st.data())
def test_random_gaps_never_emit_a_wrong_field(data):
    t, truth = long_talk(12)
    steps = list(t.steps)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(2, len(steps) - 1))
        if steps[i][0] == "gap" or len(steps[i][1]) < 2:
            continue
        side, d = steps[i]
        a = data.draw(st.integers(0, len(d) - 1))
        b = data.draw(st.integers(a + 1, len(d)))
        steps[i:i + 1] = [(side, d[:a]), ("gap", side, b - a), (side, d[b:])]
    out, counters, _ = run(steps, hint=data.draw(st.sampled_from([ROLE_SERVER, ROLE_UNKNOWN])))
    for ex in out:
        check_known(ex, truth)
    assert counters["http2.hpack_error"] == 0


# -- bad input ------------------------------------------------------------------------


def test_continuation_for_the_wrong_stream_and_orphans():
    r = Raw()
    block = r.block("c", get("/lost"))
    f = HeadersFrame(1, block[:5])
    f.flags.add("END_STREAM")
    r.raw("c", f.serialize())
    c = ContinuationFrame(3, block[5:])
    c.flags.add("END_HEADERS")
    r.raw("c", c.serialize())
    r.raw("c", c.serialize())  # an orphan
    r.headers("c", 5, get("/later"), end_stream=True)
    r.headers("s", 5, [(":status", "200")], end_stream=True)
    out, counters, _ = run(r.steps)
    assert counters["http2.dropped.bad_continuation"] == 1 and counters["http2.dropped.orphan_continuation"] == 1
    assert [e.request.target for e in out] == ["/later"]


def test_empty_frame_flood_is_counted_and_bounded():
    r = Raw()
    r.headers("c", 1, get("/f"), end_stream=True)
    r.headers("s", 1, [(":status", "200")])
    r.raw("s", DataFrame(1, b"").serialize() * 5000)
    r.data("s", 1, b"end", end_stream=True)
    out, counters, parser = run(r.steps)
    assert counters["http2.dropped.empty_frame_flood"] >= 1 and out == []
    assert parser.buffered < 20000


def test_frames_too_large_and_hpack_bombs():
    limits = CoreLimits(max_head_bytes=4096)
    r = Raw()
    r.headers("c", 1, get("/huge", [("x-h", "h" * 6000)]), end_stream=True)
    r.headers("c", 3, get("/ok"), end_stream=True)
    r.headers("s", 3, [(":status", "200")], end_stream=True)
    out, counters, _ = run(r.steps, limits=limits)
    assert counters["http2.dropped.frame_too_large"] == 1 and [e.request.target for e in out] == ["/ok"]
    bomb = Raw()
    bomb.headers("c", 1, get("/b", [("x-bomb", "B" * 3000)]), end_stream=True)
    bomb.raw("c", HeadersFrame(3, bytes([0x82, 0x84, 0x86]) + bytes([0x80 | 62]) * 1000,
                               flags=["END_HEADERS", "END_STREAM"]).serialize())
    out, counters, _ = run(bomb.steps, limits=CoreLimits(max_head_bytes=64 << 10))
    assert counters["http2.dropped.header_list_too_large"] == 1


def test_malformed_frames_resync_and_the_connection_goes_on():
    t, truth = long_talk(10)
    steps = t.steps[:6] + [("s", b"\x00\x00\x05\x03\x00\x00\x00\x00\x01" + b"\xff" * 5)] + t.steps[6:]
    out, counters, _ = run(steps)
    assert counters["http2.malformed_frame"] == 1
    for ex in out:
        check_known(ex, truth)
    assert len(out) >= 7


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=300), st.integers(0, 40)), max_size=20),
       st.sampled_from([ROLE_SERVER, ROLE_UNKNOWN]))
def test_random_bytes_never_raise_and_stay_bounded(chunks, hint):
    limits = CoreLimits(max_body_bytes=2048, max_head_bytes=1024, max_streams=4)
    p = Http2Parser(CONN, limits, Counter(), hint)
    for d, data, gap in chunks:
        p.feed(SEND if d else RECV, (H2_PREFACE if gap == 1 else b"") + data, 1.0, gap % 2 == 0)
        if gap > 30:
            p.gap(SEND if d else RECV, gap)
        p.take()
        assert p.buffered <= 2 * (1024 + 9 + 300 + 24) + 4 * 2 * 3 * 2048 + 2 * 1024
    p.expire_idle(10.0, 1.0)
    p.close()
    p.take()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_mutated_connections_never_raise(data):
    steps = list(RICH)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(steps) - 1))
        side, d = steps[i]
        if not d:
            continue
        k = data.draw(st.integers(0, len(d) - 1))
        how = data.draw(st.sampled_from(["flip", "cut", "dup"]))
        if how == "flip":
            d = d[:k] + bytes([d[k] ^ data.draw(st.integers(1, 255))]) + d[k + 1:]
        elif how == "cut":
            d = d[:k]
        else:
            d = d[:k] + d[k:] + d[k:]
        steps[i] = (side, d)
    out, counters, p = run(steps, limits=CoreLimits(max_head_bytes=32 << 10))
    assert p.buffered < 3 * (32 << 10) + 2 * 4096 + 3 * (1 << 20)
    p.close()
    p.take()  # what was emitted may differ (a flipped byte in a literal is another value): no crash


# -- h2c, idleness, close ------------------------------------------------------------------


def upgrade_talk():
    c = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
    s = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
    settings_header = c.initiate_upgrade_connection()
    s.initiate_upgrade_connection(settings_header)
    steps = [("c", c.data_to_send())]
    s.send_headers(1, ok(b"up!", "text/plain"))
    s.send_data(1, b"up!", end_stream=True)
    steps.append(("s", s.data_to_send()))
    return settings_header.decode(), steps


def test_h2c_upgrade_request_is_answered_on_stream_1():
    settings_header, steps = upgrade_talk()
    req = HttpRequest("GET", "/up", "HTTP/1.1", [("Host", "svc"), ("Upgrade", "h2c"),
                                                 ("HTTP2-Settings", settings_header)], ts=1.0)
    counters = Counter()
    p = Http2Parser(CONN, CoreLimits(), counters, ROLE_SERVER, upgrade_request=req)
    (ex,) = run(steps, parser=p, counters=counters)[0]
    assert ex.request.target == "/up" and ex.request.headers == req.headers
    assert ex.request.version == "HTTP/2.0"  # stream 1 of the HTTP/2 connection, typed as such
    assert ex.response.body == b"up!" and ex.response.status == 200
    # The same through ConnectionStream: HTTP/1 upgrade, 101, then HTTP/2.
    counters = Counter()
    cs = ConnectionStream(CONN, CoreLimits(), counters, role_hint=ROLE_SERVER)
    w = Wire(CONN)
    head = (b"GET /up HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: " + settings_header.encode() + b"\r\n\r\n")
    out = cs.on_event(w.call(RECV, head + steps[0][1]))
    out += cs.on_event(w.call(SEND, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n" + steps[1][1]))
    (ex,) = out
    assert ex.request.target == "/up" and ex.request.version == "HTTP/2.0" and ex.response.body == b"up!"


def half_open_talk():
    t = Talk()
    s1 = t.request(get("/stuck"))
    t.s.send_headers(s1, [(":status", "200")])
    t.s.send_data(s1, b"half")
    t.flush()
    t.request(get("/unanswered"))
    return t


def test_idle_streams_are_emitted_marked():
    out, counters, p = run(half_open_talk().steps, ts=100.0)
    assert out == []
    p.expire_idle(120.0, 30.0)
    assert p.take() == []
    p.expire_idle(130.0, 30.0)
    (ex,) = p.take()
    assert ex.extra == {"streamIncomplete": "true"} and ex.response.body == b"half" and ex.response.body_cut
    assert counters["http2.unanswered_stream"] == 1 and counters["http2.idle_stream"] == 2


def test_close_emits_answered_streams_and_expire_drops_everything():
    out, counters, p = run(half_open_talk().steps)
    p.close()
    (ex,) = p.take()
    assert ex.request.target == "/stuck" and ex.extra == {"streamIncomplete": "true"}
    assert counters["http2.unanswered_stream"] == 1
    p.feed(RECV, b"\x00" * 20, 2.0, True)  # closed: ignored
    assert p.take() == [] and p.buffered == 0
    out, counters, p = run(half_open_talk().steps)
    p.expire()
    assert p.take() == [] and counters["http2.expired_stream"] == 2


def test_at_boundary_and_switch():
    p = Http2Parser(CONN, CoreLimits(), Counter())
    assert p.at_boundary(RECV) and p.switch is None
    p.feed(RECV, H2_PREFACE[:5], 1.0, True)
    assert not p.at_boundary(RECV)
    p.feed(RECV, H2_PREFACE[5:] + SettingsFrame(0).serialize(), 1.0, True)
    assert p.at_boundary(RECV) and p.role == ROLE_SERVER
    p.feed(RECV, RstStreamFrame(1, error_code=8).serialize()[:4], 1.0, True)
    assert not p.at_boundary(RECV)


def test_push_promise_frame_shape():
    r = Raw()
    r.headers("c", 1, get("/pp"), end_stream=True)
    pp = PushPromiseFrame(1, promised_stream_id=2, data=r.block("s", get("/pushed")))
    pp.flags.add("END_HEADERS")
    r.raw("s", pp.serialize())
    r.headers("s", 2, [(":status", "200")], end_stream=True)
    r.headers("s", 1, [(":status", "200")], end_stream=True)
    out, counters, _ = run(r.steps)
    assert [e.request.target for e in out] == ["/pp"] and counters["http2.push_promise"] == 1


def _h2_frame_c(h: bytes) -> int:
    """probes/common.h ``h2_frame``, transliterated line by line."""
    ln = (h[0] << 16) | (h[1] << 8) | h[2]
    typ, flags = h[3], h[4]
    sid = ((h[5] & 0x7F) << 24) | (h[6] << 16) | (h[7] << 8) | h[8]
    if h[5] & 0x80 or ln > (1 << 20):
        return -1
    rules = {
        0: sid and not (flags & ~0x09), 1: sid and not (flags & ~0x2D), 2: sid and ln == 5 and not flags,
        3: sid and ln == 4 and not flags, 4: not sid and not (flags & ~1) and ln % 6 == 0 and not (flags and ln),
        5: sid and not (flags & ~0x0C) and ln >= 4, 6: not sid and ln == 8 and not (flags & ~1),
        7: not sid and ln >= 8 and not flags, 8: ln == 4 and not flags, 9: sid and not (flags & ~0x04),
    }
    return ln if rules.get(typ) else -1


def test_plausible_mirrors_the_kernel_check():
    from akto_collector.protocols.h2frames import plausible_frame as _plausible

    for typ in range(12):
        for flags in range(256):
            for ln in (0, 4, 5, 6, 8, 12, 1 << 20, (1 << 20) + 1):
                for sid in (0, 1, 0x80000001, 0x7FFFFFFF):
                    h = ln.to_bytes(3, "big") + bytes([typ, flags]) + sid.to_bytes(4, "big")
                    assert _plausible(h, 0) == _h2_frame_c(h), (typ, flags, ln, sid)


# -- a client's response read before its request's write was emitted --------------------


def early_talk():
    """Stream 1 and 3, each answered; the client's HEADERS of each step swapped with the answer.
    Stream 1's request fields are not indexed, so that it can be left out alone."""
    t = Talk()
    out = list(t.steps)
    for path in ("/early/1", "/early/3"):
        t.steps = []
        fields = get(path)
        sid = t.request(fields if path.endswith("3") else [NeverIndexedHeaderTuple(*f) for f in fields])
        req = t.steps
        t.steps = []
        t.respond(sid, ok(b'{"sid":%d}' % sid), b'{"sid":%d}' % sid)
        out += t.steps + req  # the answer's frames first
    return out


def test_a_response_that_arrives_before_its_request_is_paired_with_it():
    exs, counters, _ = run(early_talk(), role=ROLE_CLIENT)
    assert [(e.request.target, e.response.body) for e in exs] == [("/early/1", b'{"sid":1}'),
                                                                  ("/early/3", b'{"sid":3}')]
    assert not exs[0].extra and counters["http2.unpaired_response"] == 0


def test_an_early_response_whose_request_never_comes_is_unpaired_once_a_later_stream_opens():
    steps = early_talk()
    # Drop stream 1's request (sent before the collector joined): its answer stays unpaired.
    first_req = next(i for i, s in enumerate(steps) if s[0] == "c" and any(f[1] == 1 and f[3] == 1 for f in frames(s[1])))
    del steps[first_req]  # (the stream positions of the real thing are not modelled here)
    exs, counters, parser = run(steps, role=ROLE_CLIENT)
    assert [e.request.target for e in exs] == ["/early/3"]
    assert counters["http2.unpaired_response"] == 1 and not parser._streams


# -- shedding: DATA payloads left out by the kernel (probes/common.h h2_walk) ---------


def shed_pieces(data: bytes):
    """What the kernel copies of one HTTP/2 call while shedding: every byte but the DATA
    payloads (the pad length byte stays), as (offset, bytes) pieces; and where the copy ends
    when the call ends inside a payload (the cut marker), else None."""
    pieces, keep_from, end_at = [], 0, None
    for off, typ, flags, _sid, ln in frames(data):
        if typ == 0 and ln:
            start = off + 9 + (1 if flags & 8 else 0)
            if start > keep_from:
                pieces.append((keep_from, data[keep_from:start]))
            keep_from = off + 9 + ln
    if keep_from < len(data):
        pieces.append((keep_from, data[keep_from:]))
    elif keep_from > len(data):
        end_at = pieces[-1][0] + len(pieces[-1][1]) if pieces else 0
    return pieces, end_at


def shed_events(steps, role=ROLE_SERVER):
    """DataEvents of ``steps`` as the kernel emits them while shedding (FLAG_SHED on every piece)."""
    dirs, pos, out = directions(role), {SEND: 0, RECV: 0}, []
    for side, data in steps:
        d = dirs[side]
        pieces, _ = shed_pieces(data)
        for off, chunk in pieces:
            out.append(DataEvent(CONN, 1.0, d, pos[d], len(data), off, FLAG_SHED, chunk, PROTO_HTTP2))
        last_end = pieces[-1][0] + len(pieces[-1][1]) if pieces else 0
        if last_end < len(data):  # the call ends inside a DATA payload: the cut marker
            out.append(DataEvent(CONN, 1.0, d, pos[d], len(data), last_end, FLAG_SHED | FLAG_CUT, b"", PROTO_HTTP2))
        pos[d] += len(data)
    return out


def test_a_shed_connection_keeps_every_header_block_and_marks_the_bodies_cut():
    t = Talk()
    for i in range(3):  # the dynamic table carries over from one request to the next
        body = orjson.dumps({"i": i, "items": list(range(50))})
        sid = t.request([(":method", "POST"), (":path", f"/orders/{i}"), (":scheme", "https"),
                         (":authority", "api.example.com"), ("content-type", "application/json"),
                         ("x-request-id", f"req-{i}")], body)
        t.respond(sid, ok(JSON, extra=[("x-trace", f"t-{i}")]), JSON)
    counters: Counter = Counter()
    cs = ConnectionStream(CONN, CoreLimits(), counters, role_hint=ROLE_SERVER)
    out = []
    for ev in shed_events(t.steps):
        out += cs.on_event(ev)
    assert [ex.request.target for ex in out] == ["/orders/0", "/orders/1", "/orders/2"]
    for i, ex in enumerate(out):
        q, r = ex.request, ex.response
        assert ("x-request-id", f"req-{i}") in q.headers and ("x-trace", f"t-{i}") in r.headers
        assert r.status == 200 and q.body_cut and r.body_cut and r.body == b""
    assert not counters["http2.fields_unknown"] and not counters["http2.resync_bytes"]
    assert not counters["http.lost_bytes"] and not counters["http.uncopied_bytes"]  # counted by the kernel


def test_shed_pieces_leave_out_payloads_only():
    t = basic_talk()
    side, data = t.steps[-1]
    pieces, end_at = shed_pieces(data)
    kept = b"".join(chunk for _, chunk in pieces)
    assert JSON not in kept and len(kept) == len(data) - sum(ln for _, typ, _, _, ln in frames(data) if typ == 0)
