"""The small types that cross module and process boundaries.

Everything here is plain data: picklable, no behaviour beyond trivial
properties, no imports of the rest of the package. The pure modules
(streams, http1, filters, message) depend on nothing of ours but this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

# Direction of bytes, seen from the traced process.
SEND = 0  # the traced process wrote these bytes
RECV = 1  # the traced process read these bytes

# DataEvent.flags
FLAG_TLS = 1  # plaintext captured at a TLS library call, not at a socket syscall
FLAG_CUT = 2  # last piece of its call: bytes [offset+len(data), total) were not copied
FLAG_SHED = 4  # an HTTP/2 call copied while shedding: its gaps are DATA payloads left out (h2_walk)

# Role of the traced process on a connection.
ROLE_UNKNOWN = 0
ROLE_SERVER = 1  # it reads requests: the message's direction "1" (ingress)
ROLE_CLIENT = 2  # it writes requests: the message's direction "2" (egress)


class ConnId(NamedTuple):
    """One connection of one process: a reused fd gets a new generation."""

    tgid: int
    fd: int
    gen: int


class DataEvent(NamedTuple):
    """Bytes of one syscall or TLS call (or one piece of a large call).

    ``call_pos`` is the stream position (bytes of this direction on this
    connection, counted by the kernel, TLS and plaintext counted separately)
    at which the call starts; the piece covers
    ``[call_pos + offset, call_pos + offset + len(data))``. A position past
    what was already seen means bytes were lost (ring buffer, queue): a gap.
    ``total`` is the byte count the call returned.
    """

    conn: ConnId
    ts: float  # wall-clock seconds
    direction: int  # SEND or RECV
    call_pos: int
    total: int
    offset: int
    flags: int
    data: bytes
    proto: int = 0  # protocols.PROTO_*, as the kernel classified the connection


class _Record:
    """Equality and repr by fields, for the plain classes below.

    Written out instead of dataclasses because these are created per
    message on the hot path: a dataclass's generated ``__init__`` runs
    interpreted even where this module is compiled (see docs/ARCHITECTURE.md,
    "Compiled core"), a written one does not.
    """

    __slots__ = ()
    _HINTS = ("host_name",)  # what a parser noted for the encoder: not the message, not compared

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in type(self).__slots__ if f not in _Record._HINTS)

    def __repr__(self):
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in type(self).__slots__)
        return f"{type(self).__name__}({fields})"

    __hash__ = None  # mutable


class HttpRequest(_Record):
    __slots__ = ("method", "target", "version", "headers", "body", "body_cut", "body_size", "ts", "grpc_sizes",
                 "host_name")

    def __init__(self, method: str, target: str, version: str, headers: list[tuple[str, str]],
                 body: bytes = b"", body_cut: bool = False, body_size: int = 0, ts: float = 0.0,
                 grpc_sizes: list[int] | None = None, host_name: str | None = None):
        self.method = method
        self.target = target  # as sent, query string included (HTTP/2: :path)
        self.version = version  # the message's "type": "HTTP/1.1", "HTTP/2.0", "gRPC"
        self.headers = headers  # names as sent, in order, repeats kept
        self.body = body  # de-chunked, Content-Encoding undone, at most the body limit
        self.body_cut = body_cut  # body longer than the limit, or bytes of it missing
        self.body_size = body_size  # size of the whole body on the wire (after de-chunking) where known
        self.ts = ts  # wall-clock seconds when its first byte was seen
        # gRPC: the body is its messages' bytes concatenated (decompressed);
        # these are their sizes, so a consumer can split them. None: not gRPC.
        self.grpc_sizes = grpc_sizes
        # Set by a parser that checked the field names while it had them as
        # bytes (compiled HTTP/1): no two names are equal ignoring case, and
        # Host is spelt so among them ("": no Host). The encoder then makes
        # its header map with one dict() (message._fields). None: unchecked.
        self.host_name = host_name


class HttpResponse(_Record):
    __slots__ = ("version", "status", "reason", "headers", "body", "body_cut", "body_size", "ts", "grpc_sizes",
                 "host_name")

    def __init__(self, version: str, status: int, reason: str, headers: list[tuple[str, str]],
                 body: bytes = b"", body_cut: bool = False, body_size: int = 0, ts: float = 0.0,
                 grpc_sizes: list[int] | None = None, host_name: str | None = None):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.body_cut = body_cut
        self.body_size = body_size
        self.ts = ts
        self.grpc_sizes = grpc_sizes
        self.host_name = host_name  # as HttpRequest.host_name


class Exchange(_Record):
    """One request paired with its response, on one connection."""

    __slots__ = ("conn", "role", "tls", "request", "response", "extra")

    def __init__(self, conn: ConnId, role: int, tls: bool, request: HttpRequest, response: HttpResponse,
                 extra: dict[str, str] | None = None):
        self.conn = conn
        self.role = role  # ROLE_SERVER or ROLE_CLIENT
        self.tls = tls
        self.request = request
        self.response = response
        # Fields the protocol adds to the message, as strings (HTTP/2: the
        # stream id; a long stream's part number). None: nothing to add.
        self.extra = extra


@dataclass(slots=True)
class ConnMeta:
    """What the worker knows of a connection beyond its bytes."""

    pid: int
    fd: int
    comm: str = ""
    local: str = ""  # this process's own "address:port"
    peer: str = ""  # the other end's "address:port"
    # The message's "tag": a JSON object string made by the supervisor
    # (akto_collector/tags.py), shared by every connection of the process.
    tag: str = "{}"
