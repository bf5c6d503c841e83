"""The protocol parsers: pure, bytes in, exchanges out (no I/O, no logging, no bcc).

``streams.ConnectionStream`` reassembles each connection's bytes by stream
position and hands them, per direction, to the parser of the connection's
protocol. A parser (``http1.Http1Parser``, ``http2.Http2Parser``) has one
small interface::

    parser = Parser(conn, limits, counters, role, tls)
    parser.feed(direction, data, ts, call_start)   # the next contiguous bytes
    parser.gap(direction, n)                        # n bytes missing here
    parser.take() -> list[Exchange]                 # pairs completed since the last call
    parser.close(); parser.expire()                 # connection closed / idle: drop what is held, counted
    parser.role, parser.buffered, parser.at_boundary(direction)
    parser.switch                                   # set when the connection changes protocol

The kernel classifies each connection's first decisive bytes and stamps the
protocol id on every record; the ids below are the kernel's (probes/common.h).
"""

PROTO_UNKNOWN = 0  # not decided yet (too few bytes, a connection joined mid-way)
PROTO_HTTP1 = 1  # an HTTP/1.x request or status line
PROTO_HTTP2 = 2  # the HTTP/2 client preface, or a valid sequence of HTTP/2 frames
PROTO_OTHER = 3  # not HTTP any more (a WebSocket or a CONNECT tunnel after HTTP/1)

PROTOCOL_NAMES = {PROTO_UNKNOWN: "unknown", PROTO_HTTP1: "http1", PROTO_HTTP2: "http2", PROTO_OTHER: "other"}

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class CoreLimits:
    """Bounds of the capture core, per connection (every parser honours them)."""

    __slots__ = ("max_body_bytes", "max_head_bytes", "max_line_bytes", "max_pending", "max_streams")

    def __init__(self, max_body_bytes: int = 1 << 20, max_head_bytes: int = 64 << 10,
                 max_line_bytes: int = 16 << 10, max_pending: int = 32, max_streams: int = 256) -> None:
        self.max_body_bytes = max_body_bytes  # body kept (and decompressed output) per message; beyond: cut
        self.max_head_bytes = max_head_bytes  # start line + header fields (a header block); beyond: dropped
        self.max_line_bytes = max_line_bytes  # a start line awaited while resyncing
        self.max_pending = max_pending  # HTTP/1: unanswered requests per connection; beyond: oldest dropped
        # HTTP/2: streams open per connection (servers allow 100-250 at once); beyond: oldest dropped
        self.max_streams = max_streams

    def __repr__(self) -> str:
        return f"CoreLimits(max_body_bytes={self.max_body_bytes}, max_head_bytes={self.max_head_bytes})"
