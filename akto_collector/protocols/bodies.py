"""Undoing a body's Content-Encoding (gzip, deflate, br), within the body limit.

Shared by every protocol: HTTP/1 bodies, HTTP/2 DATA, compressed gRPC
messages. Pure. Corrupt or unsupported data keeps the raw bytes (counted); a
body cut by the capture keeps whatever decoded before the hole; output is
never more than the limit (a decompression bomb costs the limit, no more).
"""

from __future__ import annotations

import zlib

try:  # br is undone only where the library is installed
    import brotli
except ImportError:  # pragma: no cover - brotli is in requirements
    brotli = None

_DECODE_STEP = 1 << 16  # compressed input fed per call, so a failure keeps what came before


class _Corrupt(Exception):
    """Compressed data failed to decode; ``partial`` is what decoded before."""

    def __init__(self, partial: bytes):
        super().__init__("corrupt compressed body")
        self.partial = partial


def decode_body(body: bytes, coding: str, limit: int, cut: bool, counters) -> tuple[bytes, bool]:
    """Undo Content-Encoding, producing at most ``limit`` bytes.

    Corrupt or unsupported data keeps the raw bytes (counted); a cut body
    keeps whatever decoded before the hole.
    """
    out = body
    try:
        for c in reversed(coding.lower().split(",")):
            c = c.strip()
            if c in ("gzip", "x-gzip"):
                out, over = _inflate(out, 47, limit)  # 32+15: gzip or zlib header
            elif c == "deflate":
                try:
                    out, over = _inflate(out, 47, limit)  # zlib-wrapped, as the RFC says
                except _Corrupt as e:
                    if e.partial:
                        raise
                    out, over = _inflate(out, -15, limit)  # raw deflate, as some servers send
            elif c == "br" and brotli is not None:
                out, over = _unbrotli(out, limit)
            elif c in ("identity", ""):
                continue
            else:
                counters["http.decompress_unsupported"] += 1
                return body, cut
            cut = cut or over
    except _Corrupt as e:
        if cut and e.partial:
            return e.partial, True
        counters["http.decompress_error"] += 1
        return body, cut
    return out, cut


def _inflate(data: bytes, wbits: int, limit: int) -> tuple[bytes, bool]:
    if len(data) <= _DECODE_STEP:
        # The usual body: small, one member, within the limit: one call. Any
        # other outcome is redone below (an error would recur identically).
        d = zlib.decompressobj(wbits)
        try:
            o = d.decompress(data, limit)
        except zlib.error:
            raise _Corrupt(b"") from None
        if d.eof and not d.unused_data and len(o) < limit:
            return o, False
    out: list[bytes] = []
    got = 0
    rest = data
    try:
        while rest and got < limit:
            d = zlib.decompressobj(wbits)
            view = memoryview(rest)
            pos = 0
            size = len(rest)
            while pos < size and got < limit and not d.eof:
                o = d.decompress(view[pos:pos + _DECODE_STEP], limit - got)
                out.append(o)
                got += len(o)
                if d.unconsumed_tail:
                    break  # output limit reached
                pos += _DECODE_STEP
            if not d.eof or got >= limit:
                return b"".join(out), not d.eof or bool(d.unconsumed_tail) or bool(d.unused_data)
            # Another gzip member may follow (concatenated gzip is valid).
            rest = d.unused_data + bytes(view[pos:])
            if not rest.strip(b"\0"):
                break
    except zlib.error:
        raise _Corrupt(b"".join(out)) from None
    return b"".join(out), False


def _unbrotli(data: bytes, limit: int) -> tuple[bytes, bool]:
    d = brotli.Decompressor()
    out: list[bytes] = []
    got = 0
    view = memoryview(data)
    pos = 0
    size = len(data)
    try:
        while pos < size and got < limit:
            o = d.process(view[pos:pos + _DECODE_STEP], output_buffer_limit=limit - got)
            pos += _DECODE_STEP
            out.append(o)
            got += len(o)
            while got < limit and not d.can_accept_more_data():
                o = d.process(b"", output_buffer_limit=limit - got)
                if not o:
                    break
                out.append(o)
                got += len(o)
    except brotli.error:
        raise _Corrupt(b"".join(out)) from None
    # The output limit may be overshot by one buffer: trim to it.
    return b"".join(out)[:limit], got >= limit and not d.is_finished()
