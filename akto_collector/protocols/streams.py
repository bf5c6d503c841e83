"""Per-connection reassembly of captured bytes, handed to the connection's protocol parser.

Strategy. The kernel numbers the bytes of each direction of a connection
(``DataEvent.call_pos``); a piece that starts past the expected position
means bytes were lost, a piece flagged ``FLAG_CUT`` means the rest of its call
was not copied; in a call flagged ``FLAG_SHED`` (HTTP/2 while the kernel
sheds) the gaps are DATA payloads left out on purpose, counted by the kernel. Either way the gap's size is exact, so the protocol parser is
told "n bytes missing here" and decides (HTTP/1: skip inside a body of known
length, the body marked cut; resync at the next message boundary anywhere
else). Overlaps and duplicates are trimmed.

The parser is chosen by the protocol the kernel stamped on the connection's
records (``protocols.PROTO_*``), or from the first bytes when the kernel could
not tell; a connection may switch protocol once (HTTP/1.1 ``Upgrade: h2c`` to
HTTP/2; a WebSocket upgrade or a CONNECT tunnel ends the capture). Pure: no
I/O, no logging; every drop is a named counter.
"""

from __future__ import annotations

from akto_collector.events import FLAG_CUT, FLAG_SHED, FLAG_TLS, ROLE_UNKNOWN, ConnId, DataEvent, Exchange
from akto_collector.protocols import H2_PREFACE, PROTO_HTTP1, PROTO_HTTP2, PROTO_OTHER, PROTO_UNKNOWN, CoreLimits
from akto_collector.protocols.http1 import Http1Parser
from akto_collector.protocols.h2frames import plausible_frame
from akto_collector.protocols.http2 import Http2Parser

__all__ = ["ConnectionStream", "CoreLimits"]


class ConnectionStream:
    """Both directions of one connection: bytes in, completed exchanges out.

    Feed every ``DataEvent`` of the connection in kernel order to
    ``on_event``; it returns the exchanges whose response completed with that
    event. ``on_close`` finishes close-delimited responses; ``expire`` drops
    what is held (counted) and starts afresh. Never raises on bad input;
    ``buffered`` stays bounded by the limits.
    """

    __slots__ = (
        "conn", "limits", "tls", "finished", "last_seen", "proto",
        "_counters", "_role_hint", "_plain_seen", "_pos", "_parser", "_guessed",
    )

    def __init__(self, conn: ConnId, limits: CoreLimits, counters, role_hint: int = ROLE_UNKNOWN):
        self.conn = conn
        self.limits = limits
        self.tls = False
        self.finished = False  # not HTTP any more (upgrade, CONNECT, closed): further events are ignored
        self.last_seen = 0.0
        self._counters = counters
        self._role_hint = role_hint
        self._plain_seen = False
        self._start()

    def _start(self) -> None:
        """Fresh parse state: both directions resync, nothing pending."""
        self.proto = PROTO_UNKNOWN
        self._pos = [0, 0]  # next expected stream position per direction (the kernel counts from 0)
        self._parser = None  # chosen at the first bytes
        self._guessed = False  # chosen without the kernel's word (which then wins, once, when it comes)

    @property
    def role(self) -> int:
        parser = self._parser
        return parser.role if parser is not None else self._role_hint

    @property
    def buffered(self) -> int:
        """Bytes held for this connection now."""
        parser = self._parser
        return parser.buffered if parser is not None else 0

    def _choose(self, proto: int, offset: int, data: bytes):
        """The parser of the connection's protocol: the kernel's word, else the
        first bytes' (the HTTP/2 preface, or a plausible frame header: a
        server's first write is its SETTINGS frame, which alone the kernel
        cannot call HTTP/2), else HTTP/1."""
        if proto == PROTO_UNKNOWN:
            h2 = offset == 0 and ((len(data) >= 3 and H2_PREFACE.startswith(data[:24]))
                                     or (len(data) >= 9 and plausible_frame(data, 0) >= 0))
            proto = PROTO_HTTP2 if h2 else PROTO_HTTP1
            self._guessed = True
        self.proto = proto
        cls = Http2Parser if proto == PROTO_HTTP2 else Http1Parser
        self._parser = cls(self.conn, self.limits, self._counters, self._role_hint, self.tls)
        return self._parser

    def on_event(self, ev: DataEvent) -> list[Exchange]:
        _, ts, d, call_pos, total, offset, flags, data, proto = ev
        return self.on_data(ts, d, call_pos, total, offset, flags, data, proto)

    def on_data(self, ts: float, d: int, call_pos: int, total: int, offset: int, flags: int, data: bytes,
                proto: int) -> list[Exchange]:
        """``on_event`` with the event's fields as arguments: the worker calls
        this for every record, without building a DataEvent to take apart."""
        if self.finished:
            return []
        if ts > self.last_seen:  # a send is dated at its start: it may be older than the last record
            self.last_seen = ts
        counters = self._counters
        if flags & FLAG_TLS:
            if not self.tls:
                self.tls = True
                if self._plain_seen:
                    # Ciphertext (the handshake) reached us first: TLS plaintext takes over.
                    counters["http.tls_takeover"] += 1
                    self._start()
        elif self.tls:
            counters["http.plaintext_after_tls"] += len(data)
            return []
        else:
            self._plain_seen = True

        parser = self._parser
        if parser is None or (self._guessed and proto and proto != self.proto):
            if parser is not None:
                counters["stream.protocol_corrected"] += 1  # the guess was wrong: the kernel's word wins
                parser.expire()
                parser.take()
                self._guessed = False
            parser = self._choose(proto, offset, data)
        start = call_pos + offset
        end = start + len(data)
        pos = self._pos[d]
        call_start = offset == 0
        if start != pos:
            if start > pos:
                # A gap inside a shed call is DATA payload the kernel left
                # out and counted (kernel.dropped.shed_bytes): not lost.
                if not (flags & FLAG_SHED and offset):
                    counters["http.gap"] += 1
                    counters["http.lost_bytes"] += start - pos
                parser.gap(d, start - pos)
                pos = end
            elif end <= pos:
                counters["http.duplicate_bytes"] += len(data)
                data = b""
            else:
                counters["http.duplicate_bytes"] += pos - start
                data = data[pos - start:]
                call_start = False
                pos = end
        else:
            pos = end
        self._pos[d] = pos

        if data:
            if not self.tls and 0x14 <= data[0] <= 0x17 and parser.at_boundary(d) and _is_tls_record(data):
                counters["http.tls_record"] += 1
            else:
                parser.feed(d, data, ts, call_start)
        if flags & FLAG_CUT:
            call_end = call_pos + total
            if call_end > pos:
                if not flags & FLAG_SHED:
                    counters["http.gap"] += 1
                    counters["http.uncopied_bytes"] += call_end - pos
                parser.gap(d, call_end - pos)
                self._pos[d] = call_end

        out = parser.take()
        if parser.switch is not None:
            out = out + self._switch(parser, ts)
        return out

    def _switch(self, parser, ts: float) -> list[Exchange]:
        """The connection left the parser's protocol: continue in the next one, or stop."""
        proto, rest, request = parser.take_switch()
        self._counters["stream.protocol_switch"] += 1
        if proto == PROTO_OTHER:
            self.finished = True
            self._release()
            return []
        self.proto = proto
        nxt = Http2Parser(self.conn, self.limits, self._counters, parser.role, self.tls, upgrade_request=request)
        self._parser = nxt
        for d, data in rest.items():
            if data:
                nxt.feed(d, data, ts, False)
        return nxt.take()

    def on_close(self, ts: float) -> list[Exchange]:
        """The connection closed: close-delimited responses complete; the rest is dropped (counted)."""
        if self.finished:
            return []
        self.last_seen = max(self.last_seen, ts)
        self.finished = True
        parser = self._parser
        if parser is None:
            return []
        parser.close()
        return parser.take()

    def expire_idle(self, now: float, idle: float) -> list[Exchange]:
        """Streams of a multiplexed protocol (HTTP/2) idle for ``idle`` seconds
        are finished with what was seen, marked; returns them."""
        parser = self._parser
        if parser is None:
            return []
        parser.expire_idle(now, idle)
        return parser.take()

    def expire(self) -> list[Exchange]:
        """Idle: what can be emitted is (HTTP/2 streams that have their response,
        marked), the rest is dropped (half messages and unanswered requests,
        counted); start afresh. A late byte on this connection then starts a
        new stream that resyncs."""
        out = self.expire_idle(float("inf"), 0.0) if self._parser is not None else []
        self._release()
        self._plain_seen = False
        self.tls = False
        if not self.finished:
            self._start()
        return out

    def _release(self) -> None:
        if self._parser is not None:
            self._parser.expire()
            self._parser.take()


def _is_tls_record(data: bytes) -> bool:
    """A TLS record header: content type 0x14-0x17, version 0x03 0x00-0x04."""
    return len(data) >= 3 and 0x14 <= data[0] <= 0x17 and data[1] == 3 and data[2] <= 4
