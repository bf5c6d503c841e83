"""gRPC: un-framing length-prefixed messages in any chunking, compression, limits, streaming segments."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from akto_collector.events import ConnMeta
from akto_collector.message import MessageEncoder
from akto_collector.protocols import CoreLimits
from akto_collector.protocols.grpc import GrpcDeframer
from test_http2 import Talk, run

MSGS = [b"\x0a\x05alice\x10\x2a", b"", b"\x12" + bytes(range(200)), b"z" * 33]


def frame(msg: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + len(msg).to_bytes(4, "big") + msg


WIRE = b"".join(frame(m) for m in MSGS)


def deframe(chunks, limit=1 << 20, encoding="", counters=None):
    g = GrpcDeframer(limit, encoding, Counter() if counters is None else counters)
    for c in chunks:
        g.frame_start()
        assert g.feed(c) == len(c)
    g.finish()
    return g.take()


def test_every_two_cut_chunking():
    for a in range(len(WIRE) + 1):
        for b in range(a, len(WIRE) + 1, 7):
            body, sizes, cut, wire = deframe([WIRE[:a], WIRE[a:b], WIRE[b:]])
            assert body == b"".join(MSGS) and sizes == [len(m) for m in MSGS] and not cut and wire == len(WIRE)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=100), max_size=6), st.data())
def test_random_chunkings(msgs, data):
    wire = b"".join(frame(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    bounds = [0, *cuts, len(wire)]
    body, sizes, cut, _ = deframe([wire[a:b] for a, b in zip(bounds, bounds[1:])])
    assert body == b"".join(msgs) and sizes == [len(m) for m in msgs] and not cut


def test_compressed_messages_are_decompressed():
    plain = b"payload " * 50
    wire = frame(gzip.compress(plain), 1) + frame(b"raw") + frame(gzip.compress(b"x"), 1)
    body, sizes, cut, wire_n = deframe([wire], encoding="gzip")
    assert body == plain + b"raw" + b"x" and sizes == [len(plain), 3, 1] and wire_n == len(wire)
    z = zlib.compressobj(wbits=15)
    deflated = z.compress(plain) + z.flush()
    assert deframe([frame(deflated, 1)], encoding="deflate")[0] == plain
    counters = Counter()
    assert deframe([frame(b"??", 1)], counters=counters)[0] == b"??"  # flagged, no grpc-encoding
    assert counters["http2.grpc_compressed_without_encoding"] == 1


def test_a_message_larger_than_the_limit_is_kept_to_it_and_cut():
    counters = Counter()
    body, sizes, cut, _ = deframe([frame(b"a" * 50), frame(b"b" * 100), frame(b"c" * 10)], limit=120,
                                  counters=counters)
    assert body == b"a" * 50 + b"b" * 70 and sizes == [50, 70] and cut
    assert counters["http2.grpc_message_cut"] == 2  # the one cut, the one of which nothing fit


def segments(msgs, limit, flag=0, encoding="", pieces=1):
    g = GrpcDeframer(limit, encoding, Counter())
    g.segmenting = True
    out = []
    wire = b"".join(frame(m if not flag else gzip.compress(m), flag) for m in msgs)
    step = max(1, len(wire) // pieces)
    for i in range(0, len(wire), step):
        chunk = wire[i:i + step]
        j = g.feed(chunk)
        while j < len(chunk) or g.full:
            out.append(g.take())
            j = g.feed(chunk, j) if j < len(chunk) else j
    g.finish()
    out.append(g.take())
    return out


def test_streaming_segments_hold_at_most_the_limit_and_lose_nothing():
    msgs = [bytes([k]) * 300 for k in range(10)]
    for pieces in (1, 7, 1000):
        for flag in (0, 1):
            out = segments(msgs, 1000, flag, "gzip", pieces)
            assert [s[1] for s in out] == [[300, 300, 300]] * 3 + [[300]]
            assert b"".join(s[0] for s in out) == b"".join(msgs)
            assert not any(s[2] for s in out)
    out = segments(msgs, 1000, pieces=3)
    assert sum(s[3] for s in out) == sum(len(m) + 5 for m in msgs)  # DATA bytes, each counted once


def test_gap_inside_a_message_cuts_it_and_framing_survives():
    counters = Counter()
    g = GrpcDeframer(1 << 20, "", counters)
    w = frame(b"x" * 100) + frame(b"next")
    g.feed(w[:30])
    g.gap(20)
    g.feed(w[50:])
    g.finish()
    body, sizes, cut, wire = g.take()
    assert body == b"x" * 25 + b"next" and sizes == [25, 4] and cut and wire == len(w)


def test_gap_across_messages_loses_framing_until_a_plausible_frame_start():
    counters = Counter()
    g = GrpcDeframer(1 << 20, "", counters)
    g.feed(frame(b"a" * 10)[:8])
    g.gap(100)
    g.frame_start()
    g.feed(b"\x07garbage")  # not a prefix: still lost
    g.frame_start()
    g.feed(frame(b"back"))
    g.finish()
    body, sizes, cut, _ = g.take()
    assert body == b"aaa" + b"back" and sizes == [3, 4] and cut
    assert counters["http2.grpc_framing_lost"] == 2 and counters["http2.grpc_resync"] == 1


def test_a_stream_ending_inside_a_message():
    counters = Counter()
    body, sizes, cut, _ = deframe([frame(b"m" * 40)[:20]], counters=counters)
    assert body == b"m" * 15 and sizes == [15] and cut
    assert counters["http2.grpc_incomplete_message"] == 1


# -- through Http2Parser ------------------------------------------------------------------

GRPC_REQ = [(":method", "POST"), (":path", "/pkg.Svc/Get"), (":scheme", "http"), (":authority", "svc:50051"),
            ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "1S")]
GRPC_RESP = [(":status", "200"), ("content-type", "application/grpc")]
TRAILERS = [("grpc-status", "0"), ("grpc-message", "ok")]


def test_unary_pair_and_its_message():
    t = Talk()
    sid = t.request(GRPC_REQ, frame(b"\x08\x01"))
    t.respond(sid, GRPC_RESP, frame(b"\x0a\x03abc") + frame(b""), trailers=TRAILERS)
    (ex,) = run(t.steps)[0]
    q, r = ex.request, ex.response
    assert q.version == "gRPC" and q.body == b"\x08\x01" and q.grpc_sizes == [2] and q.body_size == 7
    assert r.body == b"\x0a\x03abc" and r.grpc_sizes == [5, 0]
    assert r.headers == [("content-type", "application/grpc"), *TRAILERS] and ex.extra is None
    msg = json.loads(MessageEncoder().encode(ex, ConnMeta(pid=1, fd=2, local="10.0.0.2:50051", peer="p:1"))[1])
    assert msg["type"] == "gRPC" and base64.b64decode(msg["responsePayload"]) == b"\x0a\x03abc"
    assert msg["responseGrpcMessageSizes"] == "[5,0]" and msg["requestGrpcMessageSizes"] == "[2]"


def test_compressed_grpc_through_the_parser():
    t = Talk()
    sid = t.request(GRPC_REQ + [("grpc-encoding", "gzip")], frame(gzip.compress(b"q" * 500), 1))
    t.respond(sid, GRPC_RESP + [("grpc-encoding", "gzip")], frame(gzip.compress(b"r" * 900), 1),
              trailers=TRAILERS)
    (ex,) = run(t.steps)[0]
    assert ex.request.body == b"q" * 500 and ex.response.body == b"r" * 900 and ex.response.grpc_sizes == [900]


def test_server_streaming_is_emitted_in_segments():
    t = Talk()
    sid = t.request(GRPC_REQ, frame(b"req"))
    t.s.send_headers(sid, GRPC_RESP)
    t.flush()
    msgs = [bytes([65 + k % 26]) * 400 for k in range(12)]
    for m in msgs:
        t.s.send_data(sid, frame(m))
        t.flush()
    t.s.send_headers(sid, TRAILERS, end_stream=True)
    t.flush()
    out, counters, _ = run(t.steps, limits=CoreLimits(max_body_bytes=1000))
    assert [e.extra for e in out] == [{"streamSegment": str(k)} for k in range(1, 7)]
    assert b"".join(e.response.body for e in out) == b"".join(msgs)
    assert all(len(e.response.body) <= 1000 for e in out)
    assert out[0].request.body == b"req" and all(e.request.body == b"" for e in out[1:])
    assert ("grpc-status", "0") in out[-1].response.headers
    assert all(("grpc-status", "0") not in e.response.headers for e in out[:-1])


def test_bidirectional_stream_reset_and_idle():
    t = Talk()
    sid = t.request(GRPC_REQ, end=False)
    t.s.send_headers(sid, GRPC_RESP)
    t.flush()
    for k in range(6):
        t.c.send_data(sid, frame(b"c%d" % k * 100))
        t.s.send_data(sid, frame(b"s%d" % k * 100))
        t.flush()
    t.c.reset_stream(sid, 8)
    t.flush()
    out, counters, _ = run(t.steps, limits=CoreLimits(max_body_bytes=700))
    assert b"".join(e.request.body for e in out) == b"".join(b"c%d" % k * 100 for k in range(6))
    assert b"".join(e.response.body for e in out) == b"".join(b"s%d" % k * 100 for k in range(6))
    assert out[-1].extra == {"streamReset": "CANCEL", "streamSegment": str(len(out))}
    # Never reset: emitted when idle, with what was seen.
    t2 = Talk()
    sid = t2.request(GRPC_REQ, end=False)
    t2.s.send_headers(sid, GRPC_RESP)
    t2.c.send_data(sid, frame(b"hello")[:7])
    t2.flush()
    out, counters, p = run(t2.steps, ts=5.0)
    p.expire_idle(100.0, 30.0)
    (ex,) = p.take()
    assert ex.extra == {"streamIncomplete": "true"} and ex.request.body == b"he" and ex.request.body_cut


def test_lost_grpc_bytes_through_the_parser():
    from test_http2 import frames, with_gap

    t = Talk()
    sid = t.request(GRPC_REQ, frame(b"req"))
    t.s.send_headers(sid, GRPC_RESP)
    t.flush()
    for k in range(4):
        t.s.send_data(sid, frame(bytes([48 + k]) * 300))
        t.flush()
    t.s.send_headers(sid, TRAILERS, end_stream=True)
    t.flush()
    # Lose 100 bytes inside the second response message: it is cut, the others are whole.
    hits = [(i, f) for i, (s, d) in enumerate(t.steps) if s == "s" for f in frames(d) if f[1] == 0]
    i, (off, *_rest) = hits[1]
    steps = with_gap(t.steps, i, off + 9 + 50, off + 9 + 150, "s")
    (ex,) = run(steps)[0]
    assert ex.response.grpc_sizes == [300, 45, 300, 300] and ex.response.body_cut
    assert ex.response.body == b"0" * 300 + b"1" * 45 + b"2" * 300 + b"3" * 300
    # Lose a whole frame and a bit: framing is found again at a later DATA frame.
    i, (off, *_rest) = hits[1]
    d = t.steps[i][1]
    steps = t.steps[:i] + [("s", d[:off + 20]), ("gap", "s", len(d) - off - 20)] + t.steps[i + 1:]
    (ex,) = run(steps)[0]
    assert ex.response.body.endswith(b"2" * 300 + b"3" * 300) and ex.response.body_cut


def streaming_talk():
    t = Talk()
    sid = t.request(GRPC_REQ, frame(b"req"), end=False)
    t.s.send_headers(sid, GRPC_RESP)
    t.flush()
    for k in range(8):
        t.c.send_data(sid, frame(b"c%d" % k * 40), end_stream=k == 7)
        t.s.send_data(sid, frame(b"s%d" % k * 90))
        t.flush()
    t.s.send_headers(sid, TRAILERS, end_stream=True)
    t.flush()
    return t.steps


STREAMING = streaming_talk()
LIMITS = CoreLimits(max_body_bytes=500)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_segments_do_not_depend_on_chunking(data):
    from test_http2 import summary

    whole = [summary(e) for e in run(STREAMING, limits=LIMITS)[0]]
    assert len(whole) > 2

    def cuts(i, d):
        return sorted(data.draw(st.lists(st.integers(1, max(1, len(d) - 1)), max_size=5)))
    assert [summary(e) for e in run(STREAMING, limits=LIMITS, cuts=cuts)[0]] == whole
