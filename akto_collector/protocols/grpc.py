"""gRPC over HTTP/2: un-framing the length-prefixed messages of one direction of a stream.

Strategy. A gRPC stream's DATA is a sequence of messages, each a 5-byte
prefix (a compressed flag, a 4-byte big-endian length) and the message. A
``GrpcDeframer`` takes the DATA payload bytes of one direction in any
chunking, slices the messages out (no per-byte loops), undoes compression
(flag 1, with the stream's ``grpc-encoding``: gzip, deflate; via
``bodies.decode_body``) and keeps them, concatenated, within ``limit`` bytes
per *segment*, with their sizes, so a consumer can split the concatenation
again (``HttpRequest.grpc_sizes``).

Segments. A streaming RPC may flow for ever; it cannot be held whole. When
``segmenting`` is set (by the owner, once the stream can be emitted: its
response headers are known) and the next message does not fit in the room
left while the segment already holds a message, ``feed`` stops before that
message and sets ``full``: the owner emits what both directions hold
(``take``) and feeds the rest. A message alone larger than the limit is kept
up to the limit (its kept length is its size in ``sizes``) and the segment
marked cut; without ``segmenting``, messages beyond the room are cut the same
way (a message of which nothing fits is not listed: the cut mark says it).

Loss. A gap inside a message of known length cuts that message (its bytes
after the hole are not kept: a protobuf with a hole is not one). A gap that
crosses a message's end loses the framing; it is looked for again at the
start of a later DATA frame (``frame_start``), where senders begin messages,
and accepted only if the prefix there is plausible. Pure, never raises,
counted under ``http2.grpc_*``.
"""

from __future__ import annotations

from akto_collector.protocols.bodies import decode_body

_PLAUSIBLE_MESSAGE = 1 << 26  # a length prefix beyond this, where framing is sought again, is not one
_NO_CODING = ("", "identity")


class GrpcDeframer:
    """The messages of one direction of one gRPC stream, one segment at a time."""

    __slots__ = ("segmenting", "full", "cut", "wire", "_limit", "_encoding", "_counters", "_body", "_sizes",
                 "_kept", "_head", "_need", "_flag", "_parts", "_mkept", "_mcut", "_ready", "_lost", "_probe")

    def __init__(self, limit: int, encoding: str, counters):
        self.segmenting = False  # stop at a full segment (the owner can emit one)
        self.full = False  # feed stopped: the segment is full, the owner must take() it
        self.cut = False  # this segment lost bytes or holds a message cut at the limit
        self.wire = 0  # DATA bytes of this segment (prefixes included, lost ones too)
        self._limit = limit
        self._encoding = encoding.strip().lower()
        self._counters = counters
        self._body: list = []  # the segment's messages, complete (decompressed)
        self._sizes: list = []
        self._kept = 0  # their bytes
        self._head = b""  # a length prefix split across feeds
        self._need = 0  # bytes of the current message still to come
        self._flag = 0  # its compressed flag
        self._parts: list = []  # its bytes kept so far
        self._mkept = 0
        self._mcut = False  # its bytes are not all kept
        self._ready = None  # a complete message waiting for the next segment (full)
        self._lost = False  # framing lost: wait for frame_start
        self._probe = False  # the next prefix ends a loss: check it is plausible

    @property
    def buffered(self) -> int:
        return self._kept + self._mkept + (len(self._ready) if self._ready is not None else 0)

    def feed(self, data, i: int = 0) -> int:
        """Consume DATA payload bytes from ``data[i:]``; returns where it stopped (``len(data)``
        unless ``full``: then take() and feed the rest)."""
        j = self._feed(data, i)
        self.wire += j - i
        return j

    def _feed(self, data, i: int) -> int:
        n = len(data)
        if self._lost:
            return n
        while i < n:
            need = self._need
            if need:
                take = need if need <= n - i else n - i
                self._keep(data, i, i + take)
                i += take
                self._need = need - take
                if self._need == 0 and not self._complete():
                    return i  # full: the owner takes the segment, then feeds the rest
                continue
            head = self._head
            if head or n - i < 5:
                got = data[i:i + 5 - len(head)]
                i += len(got)
                head += bytes(got)
                if len(head) < 5:
                    self._head = head
                    return n
                self._head = b""
                flag = head[0]
                size = int.from_bytes(head[1:5], "big")
            else:
                flag = data[i]
                size = int.from_bytes(data[i + 1:i + 5], "big")
                i += 5
                if not flag and size <= n - i and size <= self._limit - self._kept and not self._probe:
                    # The usual message: uncompressed, whole here, room for it.
                    msg = data[i:i + size]
                    self._body.append(msg if type(msg) is bytes else bytes(msg))
                    self._sizes.append(size)
                    self._kept += size
                    i += size
                    continue
            if self._probe:
                self._probe = False
                if flag > 1 or size > _PLAUSIBLE_MESSAGE:
                    self.lose()
                    return n
                self._counters["http2.grpc_resync"] += 1
            if self.segmenting and not flag and self._sizes and size > self._limit - self._kept:
                # This message does not fit: the segment is full before it.
                # Its prefix is kept aside, so the next feed starts with it.
                self._head = bytes((flag,)) + size.to_bytes(4, "big")
                self.full = True
                return i
            self._flag = flag
            self._need = size
            self._parts = []
            self._mkept = 0
            self._mcut = False
            if not size and not self._complete():
                return i
        return n

    def _keep(self, data, i: int, j: int) -> None:
        """Keep message bytes ``data[i:j]`` within the room left (compressed: within the limit)."""
        if self._mcut:
            return
        room = (self._limit if self._flag else self._limit - self._kept) - self._mkept
        if j - i > room:
            j = i + room if room > 0 else i
            self._mcut = True
        if j > i:
            self._parts.append(data[i:j])
            self._mkept += j - i

    def _complete(self) -> bool:
        """The current message is whole (or as whole as it gets): into the segment.

        False when it waits for the next segment instead (``full``)."""
        parts = self._parts
        msg = parts[0] if len(parts) == 1 else b"".join(parts)
        if type(msg) is not bytes:
            msg = bytes(msg)
        cut = self._mcut
        self._parts = []
        self._mkept = 0
        self._mcut = False
        if self._flag:
            msg, cut = self._decompress(msg, cut)
        room = self._limit - self._kept
        if len(msg) > room and self.segmenting and self._sizes:
            self._ready = msg  # (a compressed message: its size is known only now)
            if cut:
                self._counters["http2.grpc_message_cut"] += 1
            self.full = True
            return False
        self._add(msg, cut)
        return True

    def _add(self, msg: bytes, cut: bool) -> None:
        room = self._limit - self._kept
        if len(msg) > room:
            msg = msg[:room] if room > 0 else b""
            cut = True
        if cut:
            self.cut = True
            self._counters["http2.grpc_message_cut"] += 1
            if not msg:
                return  # nothing of it fits: the cut mark says so
        self._body.append(msg)
        self._sizes.append(len(msg))
        self._kept += len(msg)

    def _decompress(self, msg: bytes, cut: bool):
        coding = self._encoding
        if coding in _NO_CODING:
            self._counters["http2.grpc_compressed_without_encoding"] += 1
            return msg, cut
        return decode_body(msg, coding, self._limit, cut, self._counters)

    def gap(self, n: int) -> None:
        """``n`` bytes of this direction's DATA are missing here."""
        if n <= 0:
            return
        self.wire += n
        self.cut = True
        if self._lost:
            return
        if self._need and n < self._need:
            # Inside a message of known length: framing survives, the message is cut.
            self._need -= n
            self._mcut = True
            return
        if self._need and n == self._need:
            self._need = 0
            self._mcut = True
            self._complete()  # may set full: the owner takes before the next feed
            return
        self.lose()

    def lose(self) -> None:
        """Framing lost: the message in progress ends cut; wait for a DATA frame start."""
        if self._need or self._parts:
            self._need = 0
            self._mcut = True
            self._complete()
        self._head = b""
        self._need = 0
        self._lost = True
        self._probe = False
        self.cut = True
        self._counters["http2.grpc_framing_lost"] += 1

    def frame_start(self) -> None:
        """A DATA frame of this direction begins: after a loss, a message may begin here."""
        if self._lost:
            self._lost = False
            self._probe = True

    def finish(self) -> None:
        """The direction ended (END_STREAM, reset, idle): a message in progress is cut."""
        if self._need or self._head:
            self._counters["http2.grpc_incomplete_message"] += 1
            self._head = b""
            if self._need:
                self._need = 0
                self._mcut = True
                self._complete()
            else:
                self.cut = True

    def take(self):
        """The segment so far: (messages concatenated, their sizes, cut, DATA bytes); a new one begins."""
        body = self._body
        out = body[0] if len(body) == 1 else b"".join(body)
        sizes = self._sizes
        cut = self.cut
        wire = self.wire
        self._body = []
        self._sizes = []
        self._kept = 0
        self.cut = False
        self.wire = 0
        self.full = False
        ready = self._ready
        if ready is not None:
            self._ready = None
            self._add(ready, False)
        return out, sizes, cut, wire
