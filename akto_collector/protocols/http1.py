"""HTTP/1.x: two readers (one per direction) and the FIFO pairing of their messages.

Ownership goes one way. ``Http1Parser`` (the protocol's parser for a
connection, driven by ``streams.ConnectionStream``) owns both readers
(``http1_reader.MessageReader``) and the pairing state; a reader reports to
its owner through four calls (``kind_found``, ``message_done``,
``message_lost``, and ``method_for_response``, which it asks because the
request's method decides the response's framing: HEAD, CONNECT). How a body
is delimited is one pure function, ``http1_syntax.body_framing``.
"""

from __future__ import annotations

from collections import deque

from akto_collector.events import RECV, ROLE_CLIENT, ROLE_SERVER, ROLE_UNKNOWN, SEND, Exchange, HttpRequest
from akto_collector.protocols import PROTO_HTTP2, PROTO_OTHER
from akto_collector.protocols.http1_reader import MessageReader
from akto_collector.protocols.http1_syntax import (  # noqa: F401 (re-exported: the protocol's syntax)
    BODY_CHUNKED,
    BODY_INTERIM,
    BODY_LENGTH,
    BODY_NONE,
    BODY_UNTIL_CLOSE,
    BODY_UPGRADE,
    KIND_REQUEST,
    KIND_RESPONSE,
    body_framing,
)


class Http1Parser:
    """Both directions of one HTTP/1.x connection: bytes in, exchanges out.

    Pairs each response with the oldest unanswered request. ``pending`` is a
    FIFO of complete requests; ``None`` stands for a request known to be lost
    (its bytes fell in a gap), so that the response to it is dropped instead
    of being paired with the next request. ``early`` holds responses that
    came before any request: a client's write is emitted when the call
    returns, and the thread reading the answer may get there first; such a
    request is dated when its write began (the kernel's ``date_call``), so it
    is not later than its response, while a request written after a response
    was read (the next one, on a connection joined mid-way) is later, and
    that response is unpaired. ``switch`` is set when the connection leaves
    HTTP/1 (see ``take_switch``).
    """

    __slots__ = ("conn", "role", "tls", "out", "pending", "early", "switch", "_counters", "_max_pending",
                 "_readers", "_requests")

    def __init__(self, conn, limits, counters, role: int = ROLE_UNKNOWN, tls: bool = False):
        self.conn = conn
        self.role = ROLE_UNKNOWN
        self.tls = tls
        self.out: list[Exchange] = []
        self.pending: deque = deque()
        self.early: deque = deque()  # responses waiting for the request they answer
        self.switch = None  # (protocol, upgrade request or None) once HTTP/1 ended here
        self._counters = counters
        self._max_pending = limits.max_pending
        self._readers = (MessageReader(SEND, limits, counters, self), MessageReader(RECV, limits, counters, self))
        self._requests: MessageReader | None = None  # the reader of the request direction, once known
        if role != ROLE_UNKNOWN:
            self._set_role(role)

    # -- the protocol parser interface (streams.ConnectionStream) ----------------

    def feed(self, direction: int, data, ts: float, call_start: bool) -> None:
        self._readers[direction].feed(data, ts, call_start)

    def gap(self, direction: int, n: int) -> None:
        self._readers[direction].gap(n)

    def at_boundary(self, direction: int) -> bool:
        return self._readers[direction].at_boundary

    def close(self) -> None:
        """The connection closed: close-delimited responses complete; the rest is dropped (counted)."""
        if self._requests is not None:
            # Responses first, so a close-delimited one still finds its request.
            self._readers[SEND if self.role == ROLE_SERVER else RECV].close()
        for reader in self._readers:
            reader.close()
        self.expire()

    def expire(self) -> None:
        """Drop half messages and unanswered requests (counted)."""
        for reader in self._readers:
            reader.expire()
        n = sum(1 for r in self.pending if r is not None)
        self.pending.clear()
        if n:
            self._counters["http.unanswered_request"] += n
        if self.early:
            self._counters["http.unpaired_response"] += len(self.early)
            self.early.clear()

    def expire_idle(self, now: float, idle: float) -> None:
        """HTTP/1 has one exchange at a time per direction: nothing finishes by idleness
        short of the whole connection's (``expire``)."""

    def take(self) -> list[Exchange]:
        """The exchanges completed since the last call."""
        out = self.out
        if out:
            self.out = []
            return out
        return []

    def take_switch(self):
        """(protocol, {direction: bytes after the switch}, request the new protocol answers or None)."""
        protocol, request = self.switch
        rest = {d: reader.take_rest() for d, reader in enumerate(self._readers)}
        return protocol, rest, request

    @property
    def buffered(self) -> int:
        r = self._readers
        return (r[0].buffered + r[1].buffered + sum(len(q.body) for q in self.pending if q is not None)
                + sum(len(s.body) for s in self.early))

    # -- what the readers report -----------------------------------------------------

    def kind_found(self, reader: MessageReader, kind: int) -> None:
        # A request read means the process serves; a request written, it is a client.
        self._set_role(ROLE_SERVER if (kind == KIND_REQUEST) == (reader.direction == RECV) else ROLE_CLIENT)

    def method_for_response(self) -> str | None:
        if self.pending:
            req = self.pending[0]
            return req.method if req is not None else None
        reader = self._requests
        if reader is not None:
            req = reader.current_request()
            if req is not None:
                return req.method
        return None

    def message_done(self, msg, is_request: bool, upgrade: bool) -> None:
        if is_request:
            early = self.early
            while early:
                resp = early.popleft()
                if msg is None or resp.ts >= msg.ts:  # (a lost request: the early response was its)
                    if msg is not None:
                        self.out.append(Exchange(self.conn, self.role, self.tls, msg, resp))
                    else:
                        self._counters["http.unpaired_response"] += 1
                    return
                self._counters["http.unpaired_response"] += 1  # read before this request was written
            pending = self.pending
            pending.append(msg)
            if len(pending) > self._max_pending:
                pending.popleft()
                self._counters["http.pending_overflow"] += 1
            return
        lost = False  # the request it answers fell in a gap
        if self.pending:
            req = self.pending.popleft()
            lost = req is None
        elif self._requests is not None:
            # The response completed before its request did (an early error
            # response, or a request body still streaming): pair it now.
            req = self._requests.take_current()
        else:
            req = None
        if upgrade:
            self._counters["http.upgrade"] += 1
            for reader in self._readers:
                reader.stop()
            if req is not None and msg.status == 101 and _upgrades_to_h2c(req):
                # The request is answered on HTTP/2's stream 1: hand it over.
                self.switch = (PROTO_HTTP2, req)
                return
            self.switch = (PROTO_OTHER, None)  # WebSocket, a CONNECT tunnel: not HTTP any more
        if req is None:
            if lost or upgrade or self.switch is not None:
                self._counters["http.unpaired_response"] += 1
                return
            early = self.early
            if len(early) >= self._max_pending:
                early.popleft()
                self._counters["http.unpaired_response"] += 1
            early.append(msg)
            return
        self.out.append(Exchange(self.conn, self.role, self.tls, req, msg))

    def message_lost(self, reader: MessageReader) -> None:
        if reader.kind == KIND_REQUEST:
            self.message_done(None, True, False)
        elif reader.kind == KIND_RESPONSE:
            # A response began in lost bytes: its request will never be answered.
            if self.pending and self.pending.popleft() is not None:
                self._counters["http.unpaired_request"] += 1

    def _set_role(self, role: int) -> None:
        self.role = role
        requests = self._readers[RECV if role == ROLE_SERVER else SEND]
        responses = self._readers[SEND if role == ROLE_SERVER else RECV]
        requests.kind = KIND_REQUEST
        responses.kind = KIND_RESPONSE
        self._requests = requests


def _upgrades_to_h2c(req: HttpRequest) -> bool:
    for name, value in req.headers:
        if len(name) == 7 and name.lower() == "upgrade":
            return "h2c" in value.lower()
    return False
