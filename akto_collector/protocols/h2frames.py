"""HTTP/2 framing (RFC 9113 section 4): one reader per direction, bytes in any chunking.

Strategy. Frame headers are unpacked with one ``struct`` call; DATA payloads
are sliced and streamed to their stream as they come (never held whole); the
frames that must be whole (HEADERS, CONTINUATION, PUSH_PROMISE, SETTINGS,
RST_STREAM, GOAWAY, PRIORITY) are held up to ``max_head_bytes``, larger ones
skipped (``http2.dropped.frame_too_large``); PING, WINDOW_UPDATE and unknown
types are skipped without being held. A header block is gathered across its
CONTINUATIONs and handed to the owner whole, with padding and priority
removed.

Start. A reader begins in ``_START``: the client preface there tells the
owner the role and that both directions are seen from the connection's
start. Otherwise the connection was joined mid-way, where the kernel passes
only bytes that begin at a frame boundary: framing starts at the first byte
if its header passes the kernel's check, else the reader resyncs.

Loss (``gap``). Inside a frame of known length (DATA, a skipped frame, a
frame being held) the reader skips exactly: DATA bytes lost are reported to
their stream (its body is cut); a held header block lost makes the HPACK
table unknown (``HeaderDecoder.reset``). A gap that ends beyond the current
frame loses the framing: the table becomes unknown, every open stream of
the direction is marked cut, and the reader looks for the next *plausible
frame header sequence*: two consecutive headers passing the kernel's check
(``h2_frame`` in probes/common.h, mirrored by ``plausible_frame``), or one frame
that fills what a syscall brought exactly; it holds at most
``max_head_bytes`` while it searches and counts what it skips
(``http2.resync_bytes``). A gap during resync keeps resyncing.

Owner interface (``http2.Http2Parser``): ``on_preface(reader)``,
``on_block(reader, sid, block, end_stream, push, ts)``,
``on_lost_head(reader, sid, end_stream)``, ``on_data_frame(reader, sid, data,
end_stream, ts)`` (a whole DATA frame), ``on_data_half(reader, sid, n, ts)``
(the stream half a DATA frame begun here feeds, or None), ``on_data(half, chunk)``,
``on_data_gap(half, n)``, ``on_end(reader, sid)``, ``on_reset(sid, code)``,
``on_goaway(reader, last_sid)``, ``on_push(promised_sid)``, ``on_lost(reader)``,
``on_flood()``. Pure, never raises on bad input, counted under ``http2.*``.
"""

from __future__ import annotations

import re
import struct

from akto_collector.protocols import H2_PREFACE
from akto_collector.protocols.hpack import HeaderDecoder

_HDR = struct.Struct(">HBBBL")  # length (16 + 8 bits), type, flags, R + stream id

_START = 0  # a direction's first bytes: the preface, or a frame joined mid-way
_FRAME = 1  # at a frame header (or holding a frame that must be whole)
_DATA = 2  # inside a DATA frame's payload, then its padding
_SKIP = 3  # skipping the rest of a frame
_RESYNC = 4  # framing lost: looking for a plausible frame header sequence
_CLOSED = 5

_MAX_PLAUSIBLE = 1 << 20  # frame length the kernel's check accepts; larger only if SETTINGS allowed it
_MAX_UNDECIDED = 256  # resync candidates awaiting their next header
_MAX_EMPTY = 256  # consecutive empty DATA/HEADERS/CONTINUATION frames before it is a flood
# A position where a frame header may begin (length <= 1 MiB, known type, R bit clear):
# the regex scans in C; plausible_frame checks the rest.
_CANDIDATE = re.compile(rb"(?=[\x00-\x10][\x00-\xff][\x00-\xff][\x00-\x09][\x00-\xff][\x00-\x7f][\x00-\xff]{3})")


# RFC 9113's rules per frame type, as the kernel checks them: (stream id: 1 required, 0 forbidden,
# -1 either; flags defined; exact length or -1; least length).
_RULES = ((1, 0x09, -1, 0), (1, 0x2D, -1, 0), (1, 0, 5, 0), (1, 0, 4, 0), (0, 0x01, -1, 0),
          (1, 0x0C, -1, 4), (0, 0x01, 8, 0), (0, 0, -1, 8), (-1, 0, 4, 0), (1, 0x04, -1, 0))


def _valid(t: int, fl: int, ln: int, sid: int) -> bool:
    """A known frame type's stream and length rules; its flags too where ``fl`` >= 0 (read
    in sync, undefined flags are ignored, as RFC 9113 says; in a search they disqualify)."""
    need_sid, flags, exact, least = _RULES[t]
    if (not sid if need_sid == 1 else sid and not need_sid) or ln < least or (exact >= 0 and ln != exact):
        return False
    if t == 4 and (ln % 6 or (fl > 0 and ln)):
        return False  # SETTINGS: 6-byte entries, none on an ACK
    return fl < 0 or not fl & ~flags


def _verdict(b, p: int, q: int, n: int, call: int) -> int:
    """A plausible frame at ``p`` ending at ``q``: 1 confirmed (a plausible header follows, or it
    fills what its syscall brought), -1 refuted, 0 not known yet (``b`` ends first)."""
    if q + 9 <= n:
        return 1 if plausible_frame(b, q) >= 0 else -1
    return 1 if q == n and p == call else 0


def plausible_frame(b, p: int) -> int:
    """The frame length if the 9 bytes at ``p`` pass the kernel's check (``h2_frame``), else -1."""
    ln = b[p] << 16 | b[p + 1] << 8 | b[p + 2]
    t = b[p + 3]
    if t > 9 or b[p + 5] & 0x80 or ln > _MAX_PLAUSIBLE:
        return -1
    return ln if _valid(t, b[p + 4], ln, b[p + 5] | b[p + 6] | b[p + 7] | b[p + 8]) else -1


class FrameReader:
    """The frame reader of one direction of a connection; reports to its ``owner`` (see the module docstring)."""

    __slots__ = ("d", "owner", "decoder", "state", "buf", "need", "rem", "pad", "half", "end_sid", "block",
                 "block_sid", "block_end", "block_push", "dropping", "max_frame", "empty", "call_at", "cap",
                 "counters", "peer", "und", "scan", "clean")

    def __init__(self, d: int, owner, limits, counters):
        self.d = d
        self.peer = None  # the reader of the other direction (SETTINGS bound it)
        self.owner = owner
        self.counters = counters
        self.cap = limits.max_head_bytes  # a frame held whole, a header block, bytes held while resyncing
        self.decoder = HeaderDecoder(counters, limits.max_head_bytes)
        self.state = _START
        self.buf = bytearray()  # bytes held: a partial frame, or what resync still weighs
        self.need = 0  # len(buf) needed before trying again
        self.rem = 0  # _DATA: data bytes left; _SKIP: bytes left
        self.pad = 0  # _DATA: padding after the data
        self.half = None  # _DATA: the half fed (None: dropped)
        self.end_sid = 0  # _DATA: the stream the frame ends (END_STREAM)
        self.block = None  # a header block awaiting CONTINUATION
        self.block_sid = 0
        self.block_end = 0
        self.block_push = False
        self.dropping = False  # skipping the CONTINUATIONs of a block that was dropped
        self.max_frame = _MAX_PLAUSIBLE  # longer frames mean lost framing
        self.empty = 0  # consecutive empty frames (flood guard)
        self.call_at = -1  # in buf: where the last syscall's bytes began (resync candidates)
        self.und: list = []  # resync: undecided candidates held, (start, end of its frame) in buf
        self.scan = 0  # resync: where in buf the search for candidates goes on
        self.clean = True  # nothing lost yet: may be the connection's start (see on_preface)

    @property
    def buffered(self) -> int:
        return len(self.buf) + (len(self.block) if self.block is not None else 0) + self.decoder.buffered

    @property
    def at_boundary(self) -> bool:
        """Nothing held, at a frame boundary."""
        return not self.buf and self.block is None and self.state != _DATA and self.state != _SKIP

    def free(self) -> None:
        self.state = _CLOSED
        self.buf = bytearray()
        self.block = None
        self.und = []
        self.decoder.reset()

    def feed(self, data, ts: float, call_start: bool) -> None:
        buf = self.buf
        if buf:
            self.call_at = len(buf) if call_start else self.call_at
            buf += data
            if len(buf) < self.need:
                return
            b = buf
        else:
            if self.state == _CLOSED:
                return
            self.call_at = 0 if call_start else -1
            b = data
        n = len(b)
        i = self._run(b, n, ts)
        if i < n:
            if b is buf:
                del buf[:i]
                self.call_at -= i
            else:
                self.buf = bytearray(b[i:])
                self.call_at = -1 if self.call_at < i else self.call_at - i
        elif buf:
            self.buf = bytearray()

    def _run(self, b, n: int, ts: float) -> int:
        """Read frames from ``b``; returns where it stopped (``need`` says how much more it wants)."""
        owner = self.owner
        i = 0
        while i < n:
            st = self.state
            if st == _FRAME:
                if n - i < 9:
                    self.need = 9
                    return i
                hi, lo, t, fl, sid = _HDR.unpack_from(b, i)
                ln = hi << 8 | lo
                sid &= 0x7FFFFFFF
                end = i + 9 + ln
                if t == 0:  # DATA
                    if not sid or ln > self.max_frame:
                        i = self._malformed(i)
                        continue
                    if self.block is not None or self.dropping:
                        self._interrupted()
                    s = i + 9
                    pad = 0
                    if fl & 8:
                        if n - i < 10:
                            self.need = 10
                            return i
                        pad = b[s]
                        s += 1
                        if pad >= ln:
                            self.counters["http2.malformed_frame"] += 1
                            i = self._skip(b, i + 9, n, ln)
                            continue
                    dl = end - s - pad
                    if dl:
                        self.empty = 0
                    elif not fl & 1:
                        self._empty()
                    if end <= n:  # the whole frame is here (the usual case): one call
                        owner.on_data_frame(self, sid, b[s:s + dl], fl & 1, ts)
                        i = end
                    else:
                        half = owner.on_data_half(self, sid, dl, ts)
                        self.state = _DATA
                        self.rem = dl
                        self.pad = pad
                        self.half = half
                        self.end_sid = sid if fl & 1 else 0
                        i = s
                    continue
                if t == 1 and fl & 0x2C == 4 and sid and ln and end <= n and ln <= self.cap and self.block is None \
                        and not self.dropping:
                    # The usual HEADERS: whole here, one block, no padding or priority.
                    self.empty = 0
                    owner.on_block(self, sid, b[i + 9:end], fl & 1, False, ts)
                    i = end
                    continue
                if 0 < t < 8 and t != 6 or t == 9:
                    # A frame read whole (or skipped, too large).
                    if not _valid(t, -1, ln, sid):
                        i = self._malformed(i)
                        continue
                    if ln > self.cap:
                        self.counters["http2.dropped.frame_too_large"] += 1
                        self._lose_frame(t, fl, sid)
                        i = self._skip(b, i + 9, n, ln)
                        continue
                    if end > n:
                        self.need = 9 + ln
                        return i
                    if t == 1 or t == 9 or t == 5:
                        self._header_frame(t, fl, sid, b, i + 9, end, ts)
                    else:
                        if self.block is not None or self.dropping:
                            self._interrupted()
                        if t == 4:
                            if not fl & 1:
                                self.settings(b[i + 9:end])
                        elif t == 3:
                            owner.on_reset(sid, int.from_bytes(b[i + 9:end], "big"))
                        elif t == 7:
                            owner.on_goaway(self, int.from_bytes(b[i + 9:i + 13], "big") & 0x7FFFFFFF)
                    i = end
                    continue
                # PING, WINDOW_UPDATE, extension frames: skipped.
                if (t < 10 and not _valid(t, -1, ln, sid)) or ln > self.max_frame:
                    i = self._malformed(i)
                    continue
                if self.block is not None or self.dropping:
                    self._interrupted()
                i = self._skip(b, i + 9, n, ln)
            elif st == _DATA:
                rem = self.rem
                if rem:
                    take = rem if rem <= n - i else n - i
                    half = self.half
                    if half is not None:
                        half.stream.ts = ts
                        owner.on_data(half, b[i:i + take])
                    i += take
                    self.rem = rem - take
                    if self.rem:
                        continue
                if self.pad:
                    take = self.pad if self.pad <= n - i else n - i
                    i += take
                    self.pad -= take
                    if self.pad:
                        continue
                self.state = _FRAME
                self.half = None
                if self.end_sid:
                    owner.on_end(self, self.end_sid)
            elif st == _SKIP:
                i = self._skip(b, i, n, self.rem)
            elif st == _RESYNC:
                i = self._resync(b, i, n)
                if i < 0:
                    return ~i
            elif st == _START:
                i = self._start(b, i, n)
                if i < 0:
                    return ~i
            else:  # _CLOSED
                return n
        return n

    def _skip(self, b, i: int, n: int, count: int) -> int:
        """Skip ``count`` bytes from ``i``: now, or across feeds (``_SKIP``)."""
        if count <= n - i:
            self.state = _FRAME
            return i + count
        self.state = _SKIP
        self.rem = count - (n - i)
        return n

    def _header_frame(self, t: int, fl: int, sid: int, b, s: int, end: int, ts: float) -> None:
        owner = self.owner
        if not s < end and not fl & 4:
            self._empty()
        elif s < end:
            self.empty = 0
        if t == 9:  # CONTINUATION
            if self.block is not None:
                if sid != self.block_sid:
                    self._interrupted()
                    return
                self.block += b[s:end]
                if len(self.block) > self.cap:
                    self.counters["http2.dropped.header_block_too_large"] += 1
                    self._drop_block(not fl & 4)
                elif fl & 4:
                    block = self.block
                    self.block = None
                    owner.on_block(self, sid, block, self.block_end, self.block_push, ts)
            elif self.dropping:
                if sid != self.block_sid:
                    self._interrupted()
                elif fl & 4:
                    self.dropping = False
            else:
                # No block open: its start was lost; the table cannot follow it.
                self.counters["http2.dropped.orphan_continuation"] += 1
                self._table_lost()
            return
        if self.block is not None or self.dropping:
            self._interrupted()
        p = s
        pad = 0
        if fl & 8:
            pad = b[p] if p < end else end
            p += 1
        promised = 0
        if t == 1:
            if fl & 0x20:
                p += 5  # priority
        else:
            promised = int.from_bytes(b[p:p + 4], "big") & 0x7FFFFFFF
            p += 4
        if p + pad > end:
            self.counters["http2.malformed_frame"] += 1
            self._table_lost()
            if t == 1:
                owner.on_lost_head(self, sid, fl & 1)
            return
        if t == 5:
            owner.on_push(promised)
        if fl & 4:
            owner.on_block(self, sid, b[p:end - pad], fl & 1, t == 5, ts)
        else:
            self.block = bytearray(b[p:end - pad])
            self.block_sid = sid
            self.block_end = fl & 1
            self.block_push = t == 5

    def settings(self, payload) -> None:
        """SETTINGS sent in this direction: they bound what the other direction sends."""
        other = self.peer
        for k in range(0, len(payload) - 5, 6):
            ident = payload[k] << 8 | payload[k + 1]
            value = int.from_bytes(payload[k + 2:k + 6], "big")
            if ident == 1:
                other.decoder.set_limit(value)
            elif ident == 5 and value > _MAX_PLAUSIBLE:
                other.max_frame = value if value < 1 << 24 else (1 << 24) - 1

    def _lose_frame(self, t: int, fl: int, sid: int) -> None:
        """A frame that will not be read (too large, lost in a gap): a header block goes with it."""
        if t == 9 and sid == self.block_sid and (self.block is not None or self.dropping):
            if self.block is not None:
                self._drop_block(not fl & 4)
            else:
                self.dropping = not fl & 4
        elif t == 1 or t == 5 or t == 9:
            if self.block is not None or self.dropping:
                self._interrupted()
            self.block_sid = sid
            self.block_end = fl & 1
            self.block_push = t == 5
            self._drop_block(not fl & 4)
        elif self.block is not None or self.dropping:
            self._interrupted()

    def _drop_block(self, more: bool) -> None:
        """The block in progress (``block_sid``) cannot be decoded: the table is lost with it."""
        self.block = None
        self.dropping = more  # its CONTINUATIONs are skipped
        self._table_lost()
        if not self.block_push:
            self.owner.on_lost_head(self, self.block_sid, self.block_end)

    def _interrupted(self) -> None:
        """A block awaiting CONTINUATION was interrupted by another frame (RFC 9113 6.10)."""
        self.counters["http2.dropped.bad_continuation"] += 1
        if self.block is not None:
            self._drop_block(False)
        self.dropping = False

    def _table_lost(self) -> None:
        self.clean = False
        if self.decoder.entries or self.decoder.complete:
            self.counters["http2.hpack_table_lost"] += 1
        self.decoder.reset()

    def _empty(self) -> None:
        self.empty += 1
        if self.empty > _MAX_EMPTY:
            self.empty = 0
            self.owner.on_flood()

    # -- start, loss, resync ----------------------------------------------------------

    def _start(self, b, i: int, n: int) -> int:
        k = n - i if n - i < 24 else 24
        if b[i:i + k] == H2_PREFACE[:k]:
            if k < 24:
                self.need = 24
                return ~i
            self.state = _FRAME
            self.owner.on_preface(self)
            return i + 24
        if n - i < 9:
            self.need = 9
            return ~i
        self.state = _FRAME if plausible_frame(b, i) >= 0 else self._lose_framing()
        return i

    def _malformed(self, i: int) -> int:
        """A frame header breaking the rules where one was expected: framing is lost."""
        self.counters["http2.malformed_frame"] += 1
        self._lose_framing()
        return i

    def _lose_framing(self) -> int:
        self.counters["http2.resync"] += 1
        if self.block is not None:
            self._drop_block(False)
        self.dropping = False
        self.half = None
        self.state = _RESYNC
        self.und = []
        self.scan = 0
        self._table_lost()
        self.owner.on_lost(self)
        return _RESYNC

    def gap(self, n: int) -> None:
        """``n`` bytes of this direction are missing here."""
        st = self.state
        if n <= 0 or st == _CLOSED:
            return
        self.clean = False
        if st == _DATA and n <= self.rem + self.pad:
            lost = n if n <= self.rem else self.rem
            if self.half is not None and lost:
                self.owner.on_data_gap(self.half, lost)
            self.rem -= lost
            self.pad -= n - lost
            if not self.rem and not self.pad:
                self.state = _FRAME
                self.half = None
                if self.end_sid:
                    self.owner.on_end(self, self.end_sid)
            return
        if st == _SKIP and n <= self.rem:
            self.rem -= n
            if not self.rem:
                self.state = _FRAME
            return
        buf = self.buf
        if st == _FRAME and len(buf) >= 9:
            # Inside a frame held whole: skip its rest if the gap ends within it.
            hi, lo, t, fl, sid = _HDR.unpack_from(buf, 0)
            left = 9 + (hi << 8 | lo) - len(buf)
            if n <= left and t:
                self.buf = bytearray()
                self.need = 0
                self.rem = left - n
                self.state = _SKIP if self.rem else _FRAME
                self._lose_frame(t, fl, sid & 0x7FFFFFFF)
                return
        if st == _DATA and self.half is not None and self.rem:
            self.owner.on_data_gap(self.half, self.rem)
        if buf:
            self.counters["http2.resync_bytes"] += len(buf)
            self.buf = bytearray()
        self.need = 0
        if st != _RESYNC:
            self._lose_framing()

    def _resync(self, b, i: int, n: int) -> int:
        """Find the next plausible frame header sequence from ``i``: its index, or ~index to hold from.

        A candidate whose next header is not in yet is *undecided*; the first
        candidate confirmed wins (earlier undecided ones were then most likely
        inside a payload). Undecided candidates are held (at most ``cap``
        bytes, ``_MAX_UNDECIDED`` of them) and re-checked as bytes come, so a
        feed costs its own bytes, not the held ones again.
        """
        if b is self.buf and i == 0:
            und = self.und
            scan = self.scan
        else:
            und = []
            scan = i
        hold = self.cap
        call = self.call_at
        best = -1
        left = []
        for p, q in und:
            v = _verdict(b, p, q, n, call)
            if v > 0:
                best = p
                break
            if not v:
                left.append((p, q))
        if best < 0:
            for m in _CANDIDATE.finditer(b, scan):
                p = m.start()
                ln = plausible_frame(b, p)
                if ln < 0:
                    continue
                q = p + 9 + ln
                v = _verdict(b, p, q, n, call)
                if v > 0:
                    best = p
                    break
                if not v and q + 9 - p <= hold:
                    left.append((p, q))
                    if len(left) > _MAX_UNDECIDED:
                        del left[0]
        if best >= 0:
            if best > i:
                self.counters["http2.resync_bytes"] += best - i
            self.state = _FRAME
            self.und = []
            return best
        while left and n - left[0][0] > hold:
            del left[0]  # cannot be held any longer: given up
        keep = left[0][0] if left else (n - 8 if n - 8 > i else i)  # a header may begin in the last 8 bytes
        if keep > i:
            self.counters["http2.resync_bytes"] += keep - i
        self.und = [(p - keep, q - keep) for p, q in left]
        self.scan = (n - 8 if n - 8 > keep else keep) - keep
        self.need = n - keep + 1
        return ~keep
