"""HTTP/2 (placeholder until the HTTP/2 parser lands): bytes counted, nothing parsed."""

from __future__ import annotations

from akto_collector.events import ROLE_UNKNOWN


class Http2Parser:
    __slots__ = ("conn", "role", "tls", "switch", "_counters")

    def __init__(self, conn, limits, counters, role: int = ROLE_UNKNOWN, tls: bool = False, upgrade_request=None):
        self.conn = conn
        self.role = role
        self.tls = tls
        self.switch = None
        self._counters = counters
        if upgrade_request is not None:
            counters["http2.dropped.unparsed_requests"] += 1

    def feed(self, direction: int, data, ts: float, call_start: bool) -> None:
        self._counters["http2.dropped.unparsed_bytes"] += len(data)

    def gap(self, direction: int, n: int) -> None:
        pass

    def at_boundary(self, direction: int) -> bool:
        return False

    def take(self) -> list:
        return []

    def close(self) -> None:
        pass

    def expire(self) -> None:
        pass

    @property
    def buffered(self) -> int:
        return 0
