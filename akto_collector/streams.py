"""Per-connection reassembly of captured bytes into HTTP exchanges.

Strategy. The kernel numbers the bytes of each direction of a connection
(``DataEvent.call_pos``); a piece that starts past the expected position
means bytes were lost, a piece flagged ``FLAG_CUT`` means the rest of its call
was not copied. Either way the gap's size is exact, so the direction's
``MessageReader`` is told "n bytes missing here" and decides: skip inside a
body of known length (the body is marked cut), resync at the next message
boundary anywhere else. Overlaps and duplicates are trimmed. Pure: no I/O, no
logging; every drop is a named counter.
"""

from __future__ import annotations

from dataclasses import dataclass

from akto_collector.events import (
    FLAG_CUT,
    FLAG_TLS,
    RECV,
    ROLE_CLIENT,
    ROLE_SERVER,
    ROLE_UNKNOWN,
    SEND,
    ConnId,
    DataEvent,
    Exchange,
)
from akto_collector.http1 import KIND_REQUEST, KIND_RESPONSE, ExchangePairer, MessageReader


@dataclass(frozen=True, slots=True)
class CoreLimits:
    """Bounds of the capture core, per connection."""

    max_body_bytes: int = 1 << 20  # body kept (and decompressed output) per message; beyond: cut
    max_head_bytes: int = 64 << 10  # start line + header fields; beyond: dropped, resync
    max_line_bytes: int = 16 << 10  # a start line awaited while resyncing
    max_pending: int = 32  # unanswered requests per connection; beyond: oldest dropped


class ConnectionStream:
    """Both directions of one connection: bytes in, completed exchanges out.

    Feed every ``DataEvent`` of the connection in kernel order to
    ``on_event``; it returns the exchanges whose response completed with that
    event. ``on_close`` finishes close-delimited responses; ``expire`` drops
    what is held (counted) and starts afresh. Never raises on bad input;
    ``buffered`` stays bounded by the limits.
    """

    __slots__ = (
        "conn", "limits", "role", "tls", "finished", "last_seen",
        "_counters", "_role_hint", "_plain_seen", "_pos", "_readers", "_pairer",
    )

    def __init__(self, conn: ConnId, limits: CoreLimits, counters, role_hint: int = ROLE_UNKNOWN):
        self.conn = conn
        self.limits = limits
        self.tls = False
        self.finished = False  # HTTP ended here (upgrade, CONNECT, closed): ignore further events
        self.last_seen = 0.0
        self._counters = counters
        self._role_hint = role_hint
        self._plain_seen = False
        self._start()

    def _start(self) -> None:
        """Fresh parse state: both directions resync, nothing pending."""
        self.role = self._role_hint
        self._pos = [0, 0]  # next expected stream position per direction (the kernel counts from 0)
        pairer = ExchangePairer(self.conn, self._counters, self.limits.max_pending, self.role, self.tls)
        readers = [
            MessageReader(SEND, self.limits, self._counters, pairer, on_kind=self._on_kind),
            MessageReader(RECV, self.limits, self._counters, pairer, on_kind=self._on_kind),
        ]
        self._pairer = pairer
        self._readers = readers
        if self.role != ROLE_UNKNOWN:
            self._set_role(self.role)

    def _on_kind(self, reader: MessageReader, kind: int) -> None:
        # A request read means the process serves; a request written, it is a client.
        if (kind == KIND_REQUEST) == (reader.direction == RECV):
            self._set_role(ROLE_SERVER)
        else:
            self._set_role(ROLE_CLIENT)

    def _set_role(self, role: int) -> None:
        self.role = role
        self._pairer.role = role
        requests = self._readers[RECV if role == ROLE_SERVER else SEND]
        responses = self._readers[SEND if role == ROLE_SERVER else RECV]
        requests.kind = KIND_REQUEST
        responses.kind = KIND_RESPONSE
        self._pairer.requests = requests

    @property
    def buffered(self) -> int:
        """Bytes held for this connection now."""
        r = self._readers
        return r[0].buffered + r[1].buffered + self._pairer.buffered

    def on_event(self, ev: DataEvent) -> list[Exchange]:
        if self.finished:
            return []
        self.last_seen = ev.ts
        counters = self._counters
        flags = ev.flags
        data = ev.data
        if flags & FLAG_TLS:
            if not self.tls:
                self.tls = True
                if self._plain_seen:
                    # Ciphertext (the handshake) reached us first: TLS plaintext takes over.
                    counters["http.tls_takeover"] += 1
                    self._start()
                self._pairer.tls = True
        elif self.tls:
            counters["http.plaintext_after_tls"] += len(data)
            return []
        else:
            self._plain_seen = True

        d = ev.direction
        reader = self._readers[d]
        start = ev.call_pos + ev.offset
        end = start + len(data)
        pos = self._pos[d]
        call_start = ev.offset == 0
        if start != pos:
            if start > pos:
                counters["http.gap"] += 1
                counters["http.lost_bytes"] += start - pos
                reader.gap(start - pos)
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
            if not self.tls and 0x14 <= data[0] <= 0x17 and reader.at_boundary and _is_tls_record(data):
                counters["http.tls_record"] += 1
            else:
                reader.feed(data, ev.ts, call_start)
        if flags & FLAG_CUT:
            call_end = ev.call_pos + ev.total
            if call_end > pos:
                counters["http.gap"] += 1
                counters["http.uncopied_bytes"] += call_end - pos
                reader.gap(call_end - pos)
                self._pos[d] = call_end

        pairer = self._pairer
        out = pairer.out
        if out:
            pairer.out = []
        else:
            out = []  # never hand out the pairer's own list
        if pairer.upgraded:
            # Another protocol follows (WebSocket, a tunnel): HTTP parsing ends here.
            self.finished = True
            self._release()
        return out

    def on_close(self, ts: float) -> list[Exchange]:
        """The connection closed: close-delimited responses complete; the rest is dropped (counted)."""
        if self.finished:
            return []
        self.last_seen = max(self.last_seen, ts)
        pairer = self._pairer
        if pairer.requests is not None:
            # Responses first, so a close-delimited one still finds its request.
            responses = self._readers[SEND if self.role == ROLE_SERVER else RECV]
            responses.close()
        for reader in self._readers:
            reader.close()
        out = pairer.out
        self.finished = True
        self._release()
        return out

    def expire(self) -> None:
        """Idle: drop half messages and unanswered requests (counted), start afresh.

        A late byte on this connection then starts a new stream that resyncs.
        """
        self._release()
        self._plain_seen = False
        self.tls = False
        if not self.finished:
            self._start()

    def _release(self) -> None:
        for reader in self._readers:
            reader.expire()
        n = self._pairer.forget()
        if n:
            self._counters["http.unanswered_request"] += n
        self._pairer.out = []


def _is_tls_record(data: bytes) -> bool:
    """A TLS record header: content type 0x14-0x17, version 0x03 0x00-0x04."""
    return len(data) >= 3 and 0x14 <= data[0] <= 0x17 and data[1] == 3 and data[2] <= 4
