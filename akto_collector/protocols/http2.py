"""HTTP/2 (RFC 9113): streams paired into exchanges, with HPACK and gRPC.

Strategy. Each direction has a frame reader (``h2frames.FrameReader``:
framing, the preface, loss and resync) and its own HPACK decoder
(``hpack.HeaderDecoder``), which decodes every header block of the direction
in order, also those not used (PUSH_PROMISE, blocks of dropped streams), so
the table stays in step; joined mid-way its table is partial but exact where
it claims to know. This module is the owner the readers report to: streams,
the role, pairing, bodies.

Role. The preface gives it (written by the traced process: ROLE_CLIENT;
read: ROLE_SERVER); without one, the first header block with pseudo-headers
does: ``:method``/``:path`` travel in the client's direction, ``:status`` in
the server's (stream ids are the same both ways and cannot tell).

Pairs. A stream is created by its request headers (or the h2c upgrade
request, stream 1). It is emitted when both directions ended (END_STREAM),
or at RST_STREAM (extra ``streamReset``: the error code's name, e.g.
"CANCEL"), or by ``expire_idle``/``close`` with what was seen (extra
``streamIncomplete``, also on any pair a direction of which did not end; a
body that did not end is cut). A stream without response headers is never
emitted (``http2.unanswered_stream``). A request whose ``:path`` or
``:method`` is unknown (a field from before joining) is counted, never
guessed; ``:authority`` becomes the ``host`` header (else a ``host`` header
stays; else none, and the encoder uses the server's address). Trailers are
merged into the headers. Bodies are kept within ``max_body_bytes``, their
Content-Encoding undone, cut marked, as for HTTP/1.

gRPC (``content-type: application/grpc*``): the messages are un-framed and
decompressed (``grpc.GrpcDeframer``); the body is their bytes concatenated
and ``grpc_sizes`` their sizes. Streaming RPCs flow without bound, so once a
stream's response headers are known, a direction whose next message would
not fit in ``max_body_bytes`` makes the stream emit a *segment*: the request
and response headers repeated, the messages of both directions since the
previous segment, extra ``streamSegment`` = k (from 1). The stream's end
emits the last segment, numbered k+1: the messages since, and only it
carries the trailers (grpc-status, grpc-message) and any
streamReset/streamIncomplete mark. A stream that never filled a segment is
one plain pair without streamSegment. Before the response headers no
segment can be emitted (it repeats them): messages beyond the limit are cut
then, as in a plain body. Pure: nothing raises on bad input,
every drop is a named counter (``http2.*``), every buffer is bounded.
"""

from __future__ import annotations

from base64 import urlsafe_b64decode
from http import HTTPStatus

from akto_collector.events import RECV, ROLE_CLIENT, ROLE_SERVER, ROLE_UNKNOWN, SEND, Exchange, HttpRequest, HttpResponse
from akto_collector.protocols.bodies import decode_body
from akto_collector.protocols.grpc import GrpcDeframer
from akto_collector.protocols.h2frames import FrameReader

_MAX_PUSHED = 256  # promised stream ids remembered (their frames are ignored)
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_ERRORS = ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
           "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
           "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")
_INCOMPLETE = "streamIncomplete"


class _Half:
    """One direction of one stream: its message (head), body so far, end."""

    __slots__ = ("stream", "msg", "ended", "parts", "kept", "size", "cut", "coding", "grpc", "trailers")

    def __init__(self, stream):
        self.stream = stream
        self.msg = None  # HttpRequest / HttpResponse once its headers are decoded
        self.ended = False
        self.parts: list = []
        self.kept = 0
        self.size = 0
        self.cut = False
        self.coding = ""  # Content-Encoding
        self.grpc = None  # GrpcDeframer for a gRPC stream
        self.trailers = None


class _Stream:
    __slots__ = ("sid", "req", "resp", "ts", "segment")

    def __init__(self, sid: int, ts: float):
        self.sid = sid
        self.req = _Half(self)
        self.resp = _Half(self)
        self.ts = ts  # last activity
        self.segment = 0  # segments emitted so far


class Http2Parser:
    """Both directions of one HTTP/2 connection: bytes in, one exchange per stream out."""

    __slots__ = ("conn", "role", "tls", "switch", "out", "_counters", "_limits", "_dirs", "_client",
                 "_streams", "_pushed", "_opened")

    def __init__(self, conn, limits, counters, role: int = ROLE_UNKNOWN, tls: bool = False, upgrade_request=None):
        self.conn = conn
        self.role = ROLE_UNKNOWN
        self.tls = tls
        self.switch = None  # HTTP/2 switches to nothing
        self.out: list = []
        self._counters = counters
        self._limits = limits
        d0 = FrameReader(SEND, self, limits, counters)
        d1 = FrameReader(RECV, self, limits, counters)
        d0.peer = d1
        d1.peer = d0
        self._dirs = (d0, d1)
        self._client = -1  # the direction that carries requests, once known
        self._streams: dict = {}  # stream id -> _Stream, in creation order
        self._pushed: set = set()
        self._opened = 0  # the highest stream id a request was seen on
        if role != ROLE_UNKNOWN:
            self._set_role(role)
        if upgrade_request is not None:
            self._upgrade(upgrade_request)

    # -- the protocol parser interface -------------------------------------------

    def feed(self, direction: int, data, ts: float, call_start: bool) -> None:
        self._dirs[direction].feed(data, ts, call_start)

    def gap(self, direction: int, n: int) -> None:
        self._dirs[direction].gap(n)

    def at_boundary(self, direction: int) -> bool:
        return self._dirs[direction].at_boundary

    def take(self) -> list:
        out = self.out
        if out:
            self.out = []
            return out
        return []

    def close(self) -> None:
        """Connection closed: streams with response headers are emitted, marked; the rest counted."""
        for st in list(self._streams.values()):
            self._finish_partial(st)
        self._free()

    def expire(self) -> None:
        """Idle connection: drop everything held (counted)."""
        if self._streams:
            self._counters["http2.expired_stream"] += len(self._streams)
        self._free()

    def expire_idle(self, now: float, idle: float) -> None:
        """Emit (marked) or drop the streams without activity for ``idle`` seconds."""
        cutoff = now - idle
        for st in [s for s in self._streams.values() if s.ts <= cutoff]:
            self._counters["http2.idle_stream"] += 1
            self._finish_partial(st)

    @property
    def buffered(self) -> int:
        d0, d1 = self._dirs
        n = d0.buffered + d1.buffered
        for st in self._streams.values():
            for h in (st.req, st.resp):
                n += h.kept + (h.grpc.buffered if h.grpc is not None else 0)
        return n

    def _free(self) -> None:
        self._streams = {}
        for dr in self._dirs:
            dr.free()

    # -- what the readers report ------------------------------------------------------

    def _set_role(self, role: int) -> None:
        self.role = role
        self._client = RECV if role == ROLE_SERVER else SEND

    def on_preface(self, dr) -> None:
        # The preface is the client's; both directions are seen from the start.
        self._set_role(ROLE_CLIENT if dr.d == SEND else ROLE_SERVER)
        for x in self._dirs:
            if x.clean:
                x.decoder.start()

    def _upgrade(self, req) -> None:
        """h2c: the HTTP/1.1 request that stream 1 answers; both directions start here."""
        for x in self._dirs:
            x.decoder.start()
        st = self._streams[1] = _Stream(1, req.ts)
        # Stream 1 of the HTTP/2 connection (RFC 9113 3.2): its type is HTTP/2's, as its response's.
        st.req.msg = HttpRequest(req.method, req.target, "HTTP/2.0", req.headers, req.body, req.body_cut,
                                 req.body_size, req.ts)
        st.req.ended = True
        st.req.parts = [req.body] if req.body else []
        st.req.kept = len(req.body)
        st.req.size = req.body_size
        st.req.cut = req.body_cut
        for name, value in req.headers:
            if name.lower() == "http2-settings" and self._client >= 0:
                # The client's SETTINGS, base64url: its table size bounds the server's encoder.
                try:
                    raw = urlsafe_b64decode(value.strip() + "=" * (-len(value.strip()) % 4))
                except ValueError:
                    continue
                self._dirs[self._client].settings(raw)  # they bound what the server sends

    def on_block(self, dr, sid: int, block, end_stream: int, push: bool, ts: float) -> None:
        """A whole header block of direction ``dr`` on stream ``sid``."""
        if type(block) is not bytes:
            block = bytes(block)
        fields = dr.decoder.decode(block)
        if push:
            return  # decoded only to keep the table in step
        counters = self._counters
        if fields is None:
            self.on_lost_head(dr, sid, end_stream)
            return
        method = path = authority = status = None
        unknown = dr.decoder.unknown
        if unknown:
            fields = [f for f in fields if f is not None]
        i = 0
        nf = len(fields)
        while i < nf:
            name = fields[i][0]
            if name[:1] != ":":
                break
            value = fields[i][1]
            if name == ":method":
                method = value
            elif name == ":path":
                path = value
            elif name == ":authority":
                authority = value
            elif name == ":status":
                status = value
            i += 1
        headers = fields[i:] if i else fields
        if method is not None or path is not None:
            self._request(dr, sid, method, path, authority, headers, end_stream, unknown, ts)
        elif status is not None:
            self._response(dr, sid, status, headers, end_stream, ts)
        else:
            st = self._streams.get(sid)
            half = None
            if st is not None and self._client >= 0:
                half = st.req if dr.d == self._client else st.resp
            if half is None or half.msg is None:
                if st is None and sid in self._pushed:
                    return
                counters["http2.dropped.status_unknown" if unknown and st is not None
                         else "http2.dropped.malformed_headers"] += 1
                if st is not None:
                    self._drop(st, "http2.unanswered_stream")
                return
            half.trailers = headers if half.trailers is None else half.trailers + headers
            st.ts = ts
            if end_stream:
                self._end_half(st, half)

    def _request(self, dr, sid, method, path, authority, headers, end_stream, unknown, ts) -> None:
        counters = self._counters
        if self._client < 0:
            self._set_role(ROLE_CLIENT if dr.d == SEND else ROLE_SERVER)
        elif dr.d != self._client:
            counters["http2.dropped.wrong_direction"] += 1
            return
        if path is None or method is None:
            if method == "CONNECT":
                counters["http2.dropped.connect"] += 1  # a tunnel, not an exchange
            elif unknown:
                counters["http2.dropped.path_unknown" if path is None else "http2.dropped.method_unknown"] += 1
            else:
                counters["http2.dropped.malformed_headers"] += 1
            return
        streams = self._streams
        old = streams.get(sid)
        early = None
        if sid > self._opened:
            self._opened = sid
            # Early responses (see _response) to streams below this one will find no request:
            # a client opens its streams in increasing order.
            for st in [s for s in streams.values() if s.req.msg is None and s.sid < sid]:
                self._drop(st, "http2.unpaired_response")
        if old is not None:
            if old.req.msg is None:
                early = old  # its response came first: this is its request
            else:
                self._drop(old, "http2.dropped.stream_reused")
        elif len(streams) >= self._limits.max_streams:
            self._drop(next(iter(streams.values())), "http2.dropped.too_many_streams")
        grpc, coding, genc, host = _body_fields(headers)
        grpc = bool(grpc)
        if authority is not None:
            # The host request header is :authority (RFC 9113 section 8.3.1: it wins over Host).
            headers = [("host", authority), *([h for h in headers if h[0] != "host"] if host else headers)]
        st = early if early is not None else _Stream(sid, ts)
        streams[sid] = st
        half = st.req
        if early is not None and early.resp.grpc is not None:
            grpc = True
            early.resp.grpc.segmenting = True
        half.msg = HttpRequest(method, path, "gRPC" if grpc else "HTTP/2.0", headers, b"", False, 0, ts)
        if grpc:
            half.grpc = GrpcDeframer(self._limits.max_body_bytes, genc, counters)
            half.grpc.segmenting = early is not None  # the response's head came first
        else:
            half.coding = coding
        if end_stream:
            self._end_half(st, half)

    def _response(self, dr, sid, status, headers, end_stream, ts) -> None:
        counters = self._counters
        if self._client < 0:
            self._set_role(ROLE_SERVER if dr.d == SEND else ROLE_CLIENT)
        elif dr.d == self._client:
            counters["http2.dropped.wrong_direction"] += 1
            return
        st = self._streams.get(sid)
        if st is None:
            if sid in self._pushed:
                return
            if sid <= self._opened or not sid & 1 or len(self._streams) >= self._limits.max_streams:
                counters["http2.unpaired_response"] += 1
                return
            # An early response: a client's probe fires when its write returns, and the thread that
            # reads the answer may get there first. Its request (dated before it, on a stream above
            # every one opened so far) follows; until then the stream holds the response.
            st = self._streams[sid] = _Stream(sid, ts)
        if len(status) != 3 or not status.isdigit() or not status.isascii():
            counters["http2.dropped.malformed_headers"] += 1
            self._drop(st, "http2.unanswered_stream")
            return
        code = int(status)
        if code < 200:
            return  # informational (100, 103): the final response follows
        half = st.resp
        st.ts = ts
        if half.msg is not None:
            counters["http2.dropped.malformed_headers"] += 1  # a second final response
            return
        half.msg = HttpResponse("HTTP/2.0", code, _REASONS.get(code, ""), headers, b"", False, 0, ts)
        grpc, coding, genc, _ = _body_fields(headers)  # without a content-type, the request's decides
        if grpc or (grpc is None and st.req.grpc is not None):
            half.grpc = GrpcDeframer(self._limits.max_body_bytes, genc, counters)
            # Segments need both heads: an early response (no request yet) is cut at the limit.
            half.grpc.segmenting = st.req.msg is not None
            if st.req.grpc is not None:
                st.req.grpc.segmenting = True  # the stream can be emitted in segments now
        else:
            half.coding = coding
        if end_stream:
            self._end_half(st, half)

    def on_lost_head(self, dr, sid: int, end_stream: int) -> None:
        """A header block of ``sid`` could not be used (lost, too large, HPACK error)."""
        self._counters["http2.dropped.header_block_lost"] += 1
        st = self._streams.get(sid)
        if st is None or self._client < 0:
            return
        half = st.req if dr.d == self._client else st.resp
        if half.msg is None:
            self._drop(st, "http2.unanswered_stream")
        elif end_stream:
            self._end_half(st, half)  # lost trailers: the stream still ended

    def on_data_frame(self, dr, sid: int, chunk, end_stream: int, ts: float) -> None:
        """A whole DATA frame's data (padding removed) on ``sid``."""
        half = self.on_data_half(dr, sid, len(chunk), ts)
        if half is not None:
            if chunk:
                self.on_data(half, chunk)
            if end_stream:
                self._end_half(half.stream, half)
        elif end_stream:
            self.on_end(dr, sid)

    def on_data_half(self, dr, sid: int, n: int, ts: float):
        """The half that a DATA frame of ``n`` bytes on ``sid`` feeds, or None (dropped, counted)."""
        st = self._streams.get(sid)
        if st is None or self._client < 0:
            if n and sid not in self._pushed:
                self._counters["http2.dropped.unknown_stream_data"] += n
            return None
        half = st.req if dr.d == self._client else st.resp
        if half.msg is None:
            if n:
                self._counters["http2.dropped.data_before_headers"] += n
            return None
        st.ts = ts
        if half.grpc is not None:
            half.grpc.frame_start()
        return half

    def on_data(self, half, chunk) -> None:
        g = half.grpc
        if g is None:
            n = len(chunk)
            room = self._limits.max_body_bytes - half.kept
            if n <= room:
                half.parts.append(chunk)
                half.kept += n
            else:
                if room > 0:
                    half.parts.append(chunk[:room])
                    half.kept += room
                half.cut = True
            half.size += n
            return
        n = len(chunk)
        j = g.feed(chunk)
        while j < n:
            self._segment(half.stream)
            j = g.feed(chunk, j)
        if g.full:
            self._segment(half.stream)

    def on_data_gap(self, half, n: int) -> None:
        """``n`` DATA bytes of ``half`` were lost (framing kept)."""
        half.cut = True
        if half.grpc is not None:
            half.grpc.gap(n)
            if half.grpc.full:
                self._segment(half.stream)
        else:
            half.size += n

    def on_end(self, dr, sid: int) -> None:
        """END_STREAM on a DATA frame of ``sid``."""
        st = self._streams.get(sid)
        if st is not None and self._client >= 0:
            self._end_half(st, st.req if dr.d == self._client else st.resp)

    def _end_half(self, st, half) -> None:
        half.ended = True
        if st.req.ended and st.resp.ended:  # (an early response waits: its request has not ended)
            if st.req.msg is None:  # the request's headers were never seen (lost, or joined mid-way)
                self._drop(st, "http2.unpaired_response")
            elif st.resp.msg is None:
                self._drop(st, "http2.unanswered_stream")
            else:
                self._emit(st, None)

    def on_reset(self, sid: int, code: int) -> None:
        st = self._streams.get(sid)
        if st is None:
            return
        self._counters["http2.stream_reset"] += 1
        if st.req.msg is None:
            self._drop(st, "http2.unpaired_response")
        elif st.resp.msg is None:
            self._drop(st, "http2.unanswered_stream")
        else:
            self._emit(st, {"streamReset": _ERRORS[code] if code < len(_ERRORS) else str(code)})

    def on_goaway(self, dr, last: int) -> None:
        """GOAWAY: streams above ``last`` were not and will not be processed."""
        self._counters["http2.goaway"] += 1
        if dr.d == self._client:
            return  # the client's GOAWAY concerns pushed streams only
        for st in [s for s in self._streams.values() if s.sid > last]:
            self._drop(st, "http2.unanswered_stream")

    def on_push(self, sid: int) -> None:
        self._counters["http2.push_promise"] += 1
        if len(self._pushed) >= _MAX_PUSHED:
            self._pushed.clear()
        self._pushed.add(sid)

    def on_lost(self, dr) -> None:
        """Direction ``dr`` lost its framing: what its open streams get from now is cut."""
        if self._client < 0:
            return
        for st in self._streams.values():
            half = st.req if dr.d == self._client else st.resp
            if half.msg is not None and not half.ended:
                half.cut = True
                if half.grpc is not None:
                    half.grpc.lose()
                    if half.grpc.full:
                        self._segment(st)

    def on_flood(self) -> None:
        self._counters["http2.dropped.empty_frame_flood"] += 1
        for st in list(self._streams.values()):
            self._drop(st, "http2.dropped.empty_frame_flood_stream")

    # -- emission ----------------------------------------------------------------------

    def _drop(self, st, reason: str) -> None:
        self._counters[reason] += 1
        self._streams.pop(st.sid, None)

    def _finish_partial(self, st) -> None:
        """The stream will see no more bytes (close, idle): emit what was seen, marked."""
        if st.req.msg is None:
            self._drop(st, "http2.unpaired_response")  # an early response whose request never came
        elif st.resp.msg is None:
            self._drop(st, "http2.unanswered_stream")
        else:
            self._emit(st, {_INCOMPLETE: "true"})

    def _emit(self, st, extra) -> None:
        self._streams.pop(st.sid, None)
        for half in (st.req, st.resp):
            g = half.grpc
            if g is not None:
                g.finish()
                if g.full:
                    self._segment(st)
        req = st.req.msg
        resp = st.resp.msg
        if not st.req.ended or not st.resp.ended:
            if extra is None:
                extra = {_INCOMPLETE: "true"}
        if st.segment:
            extra = dict(extra) if extra else {}
            extra["streamSegment"] = str(st.segment + 1)
            self._counters["http2.segment"] += 1
        self._fill(st.req, req, True)
        self._fill(st.resp, resp, True)
        self.out.append(Exchange(self.conn, self.role, self.tls, req, resp, extra))

    def _segment(self, st) -> None:
        """A gRPC stream's bodies filled the limit: emit what both directions hold, continue."""
        st.segment += 1
        self._counters["http2.segment"] += 1
        r = st.req.msg
        s = st.resp.msg
        req = HttpRequest(r.method, r.target, r.version, r.headers, b"", False, 0, r.ts)
        resp = HttpResponse(s.version, s.status, s.reason, s.headers, b"", False, 0, s.ts)
        self._fill(st.req, req, False)
        self._fill(st.resp, resp, False)
        self.out.append(Exchange(self.conn, self.role, self.tls, req, resp, {"streamSegment": str(st.segment)}))

    def _fill(self, half, msg, final: bool) -> None:
        """Put what ``half`` holds into ``msg`` (its body and, at the end, its trailers); reset it."""
        g = half.grpc
        if g is not None:
            body, sizes, cut, size = g.take()
            msg.grpc_sizes = sizes
        else:
            parts = half.parts
            body = parts[0] if len(parts) == 1 else b"".join(parts)
            if type(body) is not bytes:
                body = bytes(body)
            cut = half.cut
            size = half.size
            half.parts = []
            half.kept = half.size = 0
            half.cut = False
            if half.coding and body:
                body, cut = decode_body(body, half.coding, self._limits.max_body_bytes, cut, self._counters)
        if final:
            if not half.ended and msg is not None:
                cut = True  # the body did not end
            if half.trailers:
                msg.headers = msg.headers + half.trailers
        if cut:
            self._counters["http2.body_cut"] += 1
        msg.body = body
        msg.body_cut = cut
        msg.body_size = size


def _body_fields(headers):
    """(gRPC by content-type or None without one, Content-Encoding, grpc-encoding, has a host field)."""
    grpc = None
    host = False
    coding = genc = ""
    for name, value in headers:
        if name == "content-type":
            grpc = value.startswith("application/grpc")
        elif name == "content-encoding":
            coding = value
        elif name == "grpc-encoding":
            genc = value
        elif name == "host":
            host = True
    return grpc, coding, genc, host
