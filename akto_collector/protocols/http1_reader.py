"""One direction of an HTTP/1.x connection: the lenient reader of its messages.

Strategy. A capture sees what the application accepted, so the reader is a
lenient, hand-written state machine over bytes (see docs/http-core.md for why
not httptools): heads are found with ``bytes.find`` and split with str
methods, bodies are sliced, never walked byte by byte. It is sans-IO: the
caller feeds bytes and reports gaps (bytes it knows were lost), and what it
finds goes to its owner (``http1.Http1Parser``) through four calls.

A reader starts in *resync*: it skips bytes until a request line
(``METHOD SP target SP HTTP/1.x``) or a status line (``HTTP/1.x SP 3DIGIT``)
begins a line (after a newline, at the stream start or after a gap, or where
a syscall's bytes begin); the first one it finds also tells which kind of
messages the direction carries. A gap inside a body of known length only
cuts that body; a gap anywhere else sends the reader back to resync. Every
drop increments a named counter; nothing here raises on bad input and every
buffer is bounded.
"""

from __future__ import annotations

try:
    import cython

    COMPILED = cython.compiled  # this module's own form (http1_syntax has its own)
except ImportError:
    COMPILED = False

from akto_collector.events import HttpRequest, HttpResponse
from akto_collector.protocols.bodies import decode_body
from akto_collector.protocols.http1_syntax import (
    BODY_CHUNKED,
    BODY_LENGTH,
    BODY_NONE,
    BODY_UNTIL_CLOSE,
    BODY_UPGRADE,
    CHUNK_SIZE_LINE,
    HEX_DIGITS,
    KIND_REQUEST,
    KIND_RESPONSE,
    KIND_UNKNOWN,
    REQUEST_LINE,
    REQUEST_LINE_B,
    START_PREFIX_B,
    STATUS_LINE,
    STATUS_LINE_B,
    body_framing,
    content_length,
    head_end,
    parse_fields,
    plain_request_line,
)

# Reader states.
_RESYNC = 0  # skipping to the next message boundary
_HEAD = 1  # between messages or inside a head
_LENGTH = 2  # body with a known remaining length
_CHUNK_SIZE = 3  # expecting a chunk-size line
_CHUNK_DATA = 4  # inside a chunk of known remaining size
_CHUNK_END = 5  # expecting the CRLF after a chunk
_TRAILERS = 6  # after the last chunk: trailer fields then an empty line
_UNTIL_CLOSE = 7  # response body delimited by the connection's close
_DONE = 8  # no more HTTP on this direction (upgrade, CONNECT, closed)

_BODY_STATES = frozenset((_LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE))

_MAX_CHUNK_LINE = 4096  # a chunk-size line with extensions longer than this is garbage
_MAX_ALTS = 32  # candidate line starts remembered inside a held partial line


class MessageReader:
    """Reads the HTTP/1.x messages of one direction of one connection.

    ``feed(data, ts)`` takes the next contiguous bytes, ``gap(n)`` says n bytes
    are missing before the next feed, ``close()`` ends the direction (a
    close-delimited body completes). What it finds goes to its ``owner``
    (an ``Http1Parser``): ``kind_found`` once, when a reader of unknown kind
    meets its first message boundary; ``message_done`` for each complete
    message; ``message_lost`` when one began in lost bytes.
    """

    __slots__ = (
        "kind", "direction", "_limits", "_counters", "_owner",
        "_state", "_buf", "_buf_ts", "_scan", "_line_ok", "_line_start",
        "_msg", "_is_req", "_parts", "_kept", "_size", "_cut", "_remaining",
        "_coding", "_taken", "_upgrade", "_alts", "_alt_ts", "_candidate",
    )

    def __init__(self, direction: int, limits, counters, owner, kind: int = KIND_UNKNOWN):
        self.kind = kind
        self.direction = direction
        self._limits = limits
        self._counters = counters
        self._owner = owner
        self._buf = bytearray()
        self._buf_ts = 0.0
        self._scan = 0
        self._reset_message()
        self._enter_resync(True)

    # -- state helpers ---------------------------------------------------

    def _reset_message(self) -> None:
        self._msg = None
        self._is_req = False
        self._parts: list = []
        self._kept = 0
        self._size = 0
        self._cut = False
        self._remaining = 0
        self._coding = ""
        self._taken = False
        self._upgrade = False

    def _enter_resync(self, line_start: bool) -> None:
        self._state = _RESYNC
        self._line_start = line_start  # the next byte may begin a line
        self._line_ok = False
        self._scan = 0
        self._alts: list[int] = []  # where a held partial line may also begin anew (syscall starts)
        self._alt_ts: list[float] = []  # and when those syscalls were seen
        self._candidate = False  # the held bytes begin with what looks like a start line

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._kept

    @property
    def at_boundary(self) -> bool:
        """Nothing is held and no message is in progress."""
        return self._state in (_RESYNC, _HEAD) and not self._buf

    def current_request(self) -> HttpRequest | None:
        if self._is_req and self._msg is not None and not self._taken:
            return self._msg
        return None

    def take_current(self) -> HttpRequest | None:
        """Hand out the request in progress (marked cut); its rest is still consumed."""
        req = self.current_request()
        if req is not None:
            req.body = b"".join(self._parts)
            req.body_size = self._size
            req.body_cut = True
            self._taken = True
        return req

    def stop(self) -> None:
        """HTTP/1 ends here (an upgrade): keep the bytes that follow, parse nothing more."""
        self._reset_message()
        self._state = _DONE

    def take_rest(self) -> bytes:
        """The bytes held since HTTP/1 ended (the next protocol's first bytes)."""
        rest = bytes(self._buf) if self._state == _DONE else b""
        self._buf = bytearray()
        return rest

    # -- input -----------------------------------------------------------

    def feed(self, data, ts: float, call_start: bool = False) -> None:
        """Take the next bytes; ``call_start``: they begin a syscall's bytes."""
        if self._state == _DONE or not data:
            return
        old = len(self._buf)
        call_at = -1
        if call_start and self._state == _RESYNC:
            if old:
                old = self._weigh_partial_line(ts)
            call_at = old
        if old:
            self._buf += data
            b = self._buf
        else:
            b = data
            self._buf_ts = ts
        n = len(b)
        i = 0
        # Each handler returns the index it consumed up to, or ~index to say
        # "need more bytes; keep them from index on".
        while i < n:
            st = self._state
            if st == _HEAD:
                j = self._read_head(b, i, n, old, ts)
            elif st == _LENGTH or st == _CHUNK_DATA:
                take = self._remaining
                if take > n - i:
                    take = n - i
                self._take(b, i, i + take)
                self._remaining -= take
                j = i + take
                if not self._remaining:
                    if st == _LENGTH:
                        self._complete()
                    else:
                        self._state = _CHUNK_END
            elif st == _RESYNC:
                j = self._resync(b, i, n, call_at if i <= call_at else -1, ts)
            elif st == _CHUNK_SIZE:
                j = self._read_chunk_size(b, i, n)
            elif st == _CHUNK_END:
                j = self._read_chunk_end(b, i, n)
            elif st == _TRAILERS:
                j = self._read_trailers(b, i, n)
            elif st == _UNTIL_CLOSE:
                self._take(b, i, n)
                j = n
            else:  # _DONE: the rest is another protocol's; take_rest() hands it on
                j = ~i
            if j < 0:
                i = ~j
                break
            i = j
        if i < n:
            if i >= old:
                self._buf_ts = ts  # the held bytes all came with this feed
            if i or b is not self._buf:
                self._buf = bytearray(b[i:])
        elif old:
            self._buf = bytearray()

    def gap(self, n: int) -> None:
        """``n`` bytes are missing here."""
        st = self._state
        if st == _DONE or n <= 0:
            return
        if st == _CHUNK_DATA and self._remaining < n <= self._remaining + 2:
            # The chunk's data and (part of) its CRLF were lost: framing survives.
            self._cut = True
            self._size += self._remaining
            self._state = _CHUNK_END if n == self._remaining + 1 else _CHUNK_SIZE
            self._remaining = 0
            return
        if st == _LENGTH or st == _CHUNK_DATA:
            rem = self._remaining
            self._cut = True
            if n <= rem:
                # Inside a body of known length: skip, keep framing.
                self._remaining = rem - n
                self._size += n
                if self._remaining == 0:
                    if st == _LENGTH:
                        self._complete()
                    else:
                        self._state = _CHUNK_END
                return
            self._size += rem
            self._complete()
            if st == _LENGTH:
                # The lost bytes past the body began the next message.
                self._lost()
            self._drop_buffer()
            self._enter_resync(True)
            return
        if st == _UNTIL_CLOSE:
            self._cut = True
            self._size += n
            return
        if st in _BODY_STATES:
            # Chunk framing lost: the body ends here, cut (trailers only: whole).
            if st != _TRAILERS:
                self._cut = True
            self._complete()
        elif st == _HEAD or (st == _RESYNC and self._candidate and self._buf):
            # A message began in the lost bytes (or its head was partly lost).
            self._lost()
        self._drop_buffer()
        self._enter_resync(True)

    def close(self) -> None:
        """The direction ended: a close-delimited body completes, the rest is partial."""
        if self._state == _UNTIL_CLOSE:
            self._complete()
        elif self._partial():
            self._counters["http.expired_partial"] += 1
        self._free()

    def expire(self) -> None:
        """Drop what is held (counted) and stop."""
        if self._partial():
            self._counters["http.expired_partial"] += 1
        self._free()

    def _partial(self) -> bool:
        return (self._state in _BODY_STATES and not self._taken) or (self._state == _HEAD and bool(self._buf))

    def _free(self) -> None:
        self._buf = bytearray()
        self._reset_message()
        self._state = _DONE

    def _drop_buffer(self) -> None:
        if self._buf:
            self._counters["http.resync_bytes"] += len(self._buf)
            self._buf = bytearray()

    def _lost(self) -> None:
        if self.kind != KIND_UNKNOWN:
            self._owner.message_lost(self)

    # -- resync ----------------------------------------------------------

    def _weigh_partial_line(self, ts: float) -> int:
        """A syscall begins while resync holds a partial line: weigh the hypotheses.

        The held bytes are kept only while they can still become a start line;
        each syscall start inside them is another candidate line start
        (``_alts``), because applications begin messages with a write. Returns
        the bytes still held.
        """
        buf = self._buf
        alts = [(a, t) for a, t in zip(self._alts, self._alt_ts) if START_PREFIX_B.fullmatch(buf, a)]
        if not START_PREFIX_B.fullmatch(buf):
            if alts:
                drop, self._buf_ts = alts.pop(0)
            else:
                drop = len(buf)
            self._counters["http.resync_bytes"] += drop
            del buf[:drop]
            alts = [(a - drop, t) for a, t in alts]
            self._line_start = True
        if buf:
            alts.append((len(buf), ts))
            if len(alts) > _MAX_ALTS:
                del alts[0]
        self._alts = [a for a, _ in alts]
        self._alt_ts = [t for _, t in alts]
        return len(buf)

    def _resync(self, b, i: int, n: int, call_at: int, ts: float) -> int:
        """Skip to the next message boundary at a line start.

        A line starts after a newline, at ``i`` when ``_line_start`` says so
        (stream start, after a gap), and where a syscall's bytes begin
        (``call_at``, ``_alts``): applications start their messages with a write.
        """
        kind = self.kind
        max_line = self._limits.max_line_bytes
        alts = self._alts
        j = i
        while True:
            k = b.find(b"HTTP/1.", j)
            if k < 0:
                break
            r = b.rfind(b"\n", i, k)
            if r >= 0:
                first = r + 1
            elif self._line_start:
                first = i
            else:
                first = -1
            for ls in (first, *alts, call_at):
                if ls < 0 or ls > k or (ls != first and ls <= first):
                    continue
                wait_from = first if first >= 0 else ls
                if ls == k:
                    if kind != KIND_REQUEST:
                        if n - k < 13:
                            return self._resync_skip(i, wait_from, True, call_at, ts, True)
                        if STATUS_LINE_B.match(b, k):
                            return self._resync_found(i, k, KIND_RESPONSE, call_at, ts)
                elif kind != KIND_RESPONSE:
                    if REQUEST_LINE_B.match(b, ls):
                        return self._resync_found(i, ls, KIND_REQUEST, call_at, ts)
                    if b.find(b"\n", k) < 0 and n - ls <= max_line:
                        return self._resync_skip(i, wait_from, True, call_at, ts, True)
            j = k + 1
        # No boundary here: keep only the last partial line, it may become one.
        r = b.rfind(b"\n", i)
        if r >= 0:
            keep = r + 1
        elif self._line_start:
            keep = i
        elif alts:
            keep = alts[0]
        elif call_at >= i:
            keep = call_at
        else:
            keep = n
        if keep < n and (n - keep > max_line or not START_PREFIX_B.fullmatch(b, keep)):
            # Cannot become a start line; a later syscall start inside still may.
            later = [a for a in (*alts, call_at) if a > keep and START_PREFIX_B.fullmatch(b, a)]
            keep = later[0] if later and n - later[0] <= max_line else n
        return self._resync_skip(i, keep, keep < n or r == n - 1, call_at, ts)

    def _resync_skip(self, i: int, keep: int, at_line_start: bool, call_at: int, ts: float, candidate: bool = False) -> int:
        self._candidate = candidate
        if keep > i:
            self._counters["http.resync_bytes"] += keep - i
        self._line_start = at_line_start
        self._buf_ts = self._ts_at(keep, call_at, ts)
        # Syscall starts inside the kept bytes stay candidate line starts.
        alts = [(a - keep, t) for a, t in zip(self._alts, self._alt_ts) if a > keep]
        if call_at > keep and (not alts or alts[-1][0] != call_at - keep):
            alts.append((call_at - keep, ts))
        self._alts = [a for a, _ in alts]
        self._alt_ts = [t for _, t in alts]
        return ~keep

    def _ts_at(self, pos: int, call_at: int, ts: float) -> float:
        """When the byte at ``pos`` of the held bytes was seen (its syscall's time)."""
        if 0 <= call_at <= pos:
            return ts
        best = self._buf_ts
        for a, t in zip(self._alts, self._alt_ts):
            if a > pos:
                break
            best = t
        return best

    def _resync_found(self, i: int, pos: int, kind: int, call_at: int, ts: float) -> int:
        if pos > i:
            self._counters["http.resync_bytes"] += pos - i
        if self.kind == KIND_UNKNOWN:
            self.kind = kind
            self._owner.kind_found(self, kind)
        self._state = _HEAD
        self._line_ok = True
        self._scan = 0
        self._buf_ts = self._ts_at(pos, call_at, ts)
        self._alts = []
        self._alt_ts = []
        return pos

    def _malformed(self, i: int) -> int:
        """The bytes at ``i`` are not what HTTP allows here: skip to the next boundary."""
        self._counters["http.malformed"] += 1
        if self._msg is not None:
            self._cut = True
            self._complete()
        self._enter_resync(False)
        return i

    # -- heads -----------------------------------------------------------

    def _read_head(self, b, i: int, n: int, old: int, ts: float) -> int:
        # Tolerate empty lines between messages (RFC 9112 section 2.2).
        while b[i] == 13 or b[i] == 10:
            i += 1
            if i == n:
                return n
        limits = self._limits
        s = i if not old else max(i, self._scan)
        e, body = head_end(b, s, n)
        if e < 0:
            # Incomplete head: check its start line now, so garbage is not
            # buffered up to the head limit before being recognised.
            if not self._line_ok:
                e = b.find(b"\n", i)
                if e < 0:
                    if n - i > limits.max_line_bytes:
                        return self._malformed(i)
                elif (REQUEST_LINE_B if self.kind == KIND_REQUEST else STATUS_LINE_B).match(b, i):
                    self._line_ok = True
                else:
                    return self._malformed(i)
            if n - i > limits.max_head_bytes:
                self._counters["http.head_too_large"] += 1
                self._counters["http.resync_bytes"] += n - i
                self._enter_resync(False)
                return n
            self._scan = n - i - 2 if n - i > 2 else 0
            return ~i
        if e - i > limits.max_head_bytes:
            self._counters["http.head_too_large"] += 1
            self._counters["http.resync_bytes"] += body - i
            self._enter_resync(True)
            return body
        self._scan = 0
        self._line_ok = False
        raw = b[i:e]
        msg_ts = self._buf_ts if i < old else ts
        if not self._parse_head(raw, msg_ts):
            return self._malformed(body)
        rem = self._remaining
        if self._state == _LENGTH and rem <= n - body and rem <= self._limits.max_body_bytes:
            # The whole Content-Length body is here too (the usual case: a
            # message in one syscall): hand it on now, not via the loop and _take.
            end = body + rem
            self._finish(self._msg, b[body:end], rem)
            return end
        return body

    def _parse_head(self, raw, ts: float) -> bool:
        """Parse a head (start line and fields, no final empty line) and set up the body."""
        rb = raw if type(raw) is bytes else bytes(raw)
        n = len(rb)
        try:
            text = rb.decode("utf-8")
        except UnicodeDecodeError:
            text = rb.decode("latin-1")  # obs-text: keep every byte as a character
        first_end = rb.find(b"\n")
        if first_end < 0:
            first_end = n
        first = text[:first_end] if len(text) == n else text.partition("\n")[0]
        first = first.rstrip("\r")
        headers = []
        host_name = None  # the names unchecked (HttpRequest.host_name)
        if COMPILED and len(text) == n:
            # Compiled, and one character per byte (ASCII, or the latin-1
            # fallback): the fields are found by scanning the bytes through a
            # char pointer (C loops) and cut out of the text at the same
            # indexes; as parse_fields has them, which is what the plain
            # Python runs (its split, partition and strip cost less there
            # than a loop per byte): a line without ":" is not a field; the
            # value loses the SP, HTAB and CR around it. An obs-fold line
            # (beginning with SP or HTAB) sends the head to parse_fields.
            # While a name's bytes pass, they are hashed lower-cased (| 32
            # lower-cases ASCII letters and maps each other byte to one
            # byte): two names equal ignoring case hash alike, so distinct
            # hashes prove the names distinct, which saves the encoder its
            # case-folding (message._fields). A repeat, a collision, a
            # non-ASCII name or more than 32 names: left unchecked.
            p = rb  # compiled: a char pointer into the bytes (C loops below)
            names = 0  # names hashed so far; -1: unchecked
            prime = 1099511628211
            host = ""
            pos = first_end + 1
            while pos < n:
                le = pos
                while le < n and p[le] != 10:
                    le += 1
                c = p[pos]
                if c == 32 or c == 9:
                    headers = parse_fields(text[first_end + 1:])
                    names = -1
                    break
                k = pos
                h = 1469598103934665603  # FNV-1a, 64 bits (C integers: the product wraps)
                high = 0
                while k < le and p[k] != 58:
                    c = p[k]
                    high |= c
                    h = (h ^ (c | 32)) * prime
                    k += 1
                if k < le:
                    if names >= 0:
                        j = 0
                        while j < names and hashes[j] != h:  # noqa: F821 (a C array, http1_reader.pxd)
                            j += 1
                        if j < names or names == 32 or high >= 128:
                            names = -1
                        else:
                            hashes[names] = h  # noqa: F821
                            names += 1
                            if k - pos == 4 and (p[pos] | 32) == 104 and (p[pos + 1] | 32) == 111 and \
                                    (p[pos + 2] | 32) == 115 and (p[pos + 3] | 32) == 116:
                                host = text[pos:k]
                    a = k + 1
                    while a < le and (p[a] == 32 or p[a] == 9 or p[a] == 13):
                        a += 1
                    end = le
                    while end > a and (p[end - 1] == 13 or p[end - 1] == 32 or p[end - 1] == 9):
                        end -= 1
                    headers.append((text[pos:k], text[a:end]))
                pos = le + 1
            if names >= 0:
                host_name = host
        elif first_end < n:
            headers = parse_fields(text.partition("\n")[2])
        cl = None
        chunked = False
        coding = ""
        # Three fields decide framing; compare lengths before case-folding names.
        for name, value in headers:
            ln = len(name)
            if ln == 14:
                if name.lower() == "content-length":
                    v = content_length(value)
                    if v is None or (cl is not None and cl != v):
                        return False
                    cl = v
            elif ln == 17:
                if name.lower() == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True  # chunked wins over Content-Length
            elif ln == 16:
                if name.lower() == "content-encoding":
                    coding = value if not coding else coding + "," + value
        # The message fields were reset when the previous message completed.
        self._coding = coding
        if self.kind == KIND_REQUEST:
            parts = first.split(" ")
            if len(parts) == 3 and plain_request_line(parts):
                method, target, version = parts
            else:
                m = REQUEST_LINE.fullmatch(first)
                if m is None:
                    return False
                method, target, version = m.groups()
            self._is_req = True
            self._msg = HttpRequest(method, target, version, headers, b"", False, 0, ts, None, host_name)
            self._frame_body(body_framing(None, None, cl, chunked), cl)
            return True
        version, _, rest = first.partition(" ")
        code, _, reason = rest.partition(" ")
        if len(version) == 8 and version[:7] == "HTTP/1." and len(code) == 3 and code.isdigit() and code.isascii():
            status = int(code)
        else:
            m = STATUS_LINE.fullmatch(first)
            if m is None:
                return False
            version, status, reason = m[1], int(m[2]), m[3] or ""
        self._msg = HttpResponse(version, status, reason.strip(" "), headers, b"", False, 0, ts, None, host_name)
        self._frame_body(body_framing(self._owner.method_for_response(), status, cl, chunked), cl)
        return True

    def _frame_body(self, framing: int, cl) -> None:
        """Enter the state that reads the body ``framing`` says (or complete the message)."""
        if framing == BODY_LENGTH:
            self._state = _LENGTH
            self._remaining = cl
        elif framing == BODY_CHUNKED:
            self._state = _CHUNK_SIZE
        elif framing == BODY_NONE:
            self._complete()
        elif framing == BODY_UNTIL_CLOSE:
            self._state = _UNTIL_CLOSE
        elif framing == BODY_UPGRADE:
            self._upgrade = True
            self._complete()
        else:  # BODY_INTERIM: a 1xx response; the real one follows, it is no pair by itself
            self._reset_message()
            self._state = _HEAD

    # -- bodies ----------------------------------------------------------

    def _take(self, b, i: int, j: int) -> None:
        room = self._limits.max_body_bytes - self._kept
        if room > 0:
            if j - i > room:
                part = b[i:i + room]
                self._cut = True
            else:
                part = b[i:j]
            self._parts.append(part)
            self._kept += len(part)
        elif j > i:
            self._cut = True
        self._size += j - i

    def _read_chunk_size(self, b, i: int, n: int) -> int:
        e = b.find(b"\n", i)
        if e < 0:
            if n - i > _MAX_CHUNK_LINE:
                return self._malformed(i)
            return ~i
        line = b[i:e - 1] if e > i and b[e - 1] == 13 else b[i:e]
        if 0 < len(line) <= 16 and not line.strip(HEX_DIGITS):
            size = int(line, 16)  # the usual "1a3\r\n": hex digits only, no regex needed
        else:
            m = CHUNK_SIZE_LINE.match(b, i, e)
            if m is None:
                return self._malformed(i)
            size = int(m[1], 16)
        if size:
            self._state = _CHUNK_DATA
            self._remaining = size
        else:
            self._state = _TRAILERS
        return e + 1

    def _read_chunk_end(self, b, i: int, n: int) -> int:
        c = b[i]
        if c == 10:
            self._state = _CHUNK_SIZE
            return i + 1
        if c == 13:
            if i + 1 == n:
                return ~i
            if b[i + 1] == 10:
                self._state = _CHUNK_SIZE
                return i + 2
        return self._malformed(i)

    def _read_trailers(self, b, i: int, n: int) -> int:
        c = b[i]
        if c == 10:
            self._complete()
            return i + 1
        if c == 13:
            if i + 1 == n:
                return ~i
            if b[i + 1] == 10:
                self._complete()
                return i + 2
        e, end = head_end(b, i, n)
        if e < 0:
            if n - i > self._limits.max_head_bytes:
                self._counters["http.head_too_large"] += 1
                return self._malformed(i)
            return ~i
        if e - i > self._limits.max_head_bytes:
            self._counters["http.head_too_large"] += 1
            return self._malformed(i)
        text = b[i:e].decode("latin-1")
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        self._msg.headers.extend(parse_fields(text.rstrip("\r")))
        self._msg.host_name = None  # trailers: names no longer checked
        self._complete()
        return end

    def _complete(self) -> None:
        """The message in progress is whole (or as whole as it will get): hand it on."""
        msg = self._msg
        if self._taken:
            # Already paired by an early response: its rest was only consumed.
            self._reset_message()
            self._state = _HEAD
            self._line_ok = False
            return
        parts = self._parts
        self._finish(msg, parts[0] if len(parts) == 1 else b"".join(parts), self._size)

    def _finish(self, msg, body, size: int) -> None:
        """Hand on ``msg`` (the message in progress) with its body, ``size`` bytes on the wire."""
        if type(body) is not bytes:
            body = bytes(body)
        cut = self._cut
        if self._coding and body:
            body, cut = decode_body(body, self._coding, self._limits.max_body_bytes, cut, self._counters)
        msg.body = body
        msg.body_cut = cut
        msg.body_size = size
        if cut:
            self._counters["http.body_cut"] += 1
        is_req = self._is_req
        upgrade = self._upgrade
        self._reset_message()
        self._state = _HEAD
        self._line_ok = False
        self._owner.message_done(msg, is_req, upgrade)  # on an upgrade, the owner stops both readers
