"""HTTP/1.x syntax, as pure functions of a message's bytes and head.

What a start line and a header field look like (the byte patterns resync
looks for, the lenient parse of fields), and how a body is delimited:
``body_framing``, one pure function of the head (h11's ``_body_framing`` is
the model), used by the reader to pick its body state.
"""

from __future__ import annotations

import re

try:
    import cython

    COMPILED = cython.compiled  # a constant: True in the module Cython built, False in this source
except ImportError:  # plain Python, Cython not installed
    COMPILED = False

KIND_UNKNOWN = 0
KIND_REQUEST = 1
KIND_RESPONSE = 2

# Body framings (body_framing).
BODY_NONE = 0  # no body
BODY_LENGTH = 1  # Content-Length bytes
BODY_CHUNKED = 2  # chunked transfer coding
BODY_UNTIL_CLOSE = 3  # a response body delimited by the connection's close
BODY_UPGRADE = 4  # 101 Switching Protocols, or a CONNECT tunnel: another protocol follows
BODY_INTERIM = 5  # a 1xx response: the final one follows

TCHARS = rb"!#$%&'*+.^_`|~0-9A-Za-z-"
# Message boundaries as bytes: any token as method, any non-blank non-control
# bytes (raw UTF-8 included) as target.
REQUEST_LINE_B = re.compile(rb"[" + TCHARS + rb"]+ +[^\x00-\x20\x7f]+ +HTTP/1\.[0-9]\r?\n")
STATUS_LINE_B = re.compile(rb"HTTP/1\.[0-9] +[0-9]{3}[ \r\n]")
# What the first bytes of a start line may look like, to tell a boundary cut
# across syscalls from junk when a new syscall's bytes arrive during resync.
START_PREFIX_B = re.compile(
    rb"[" + TCHARS + rb"]+(?: +(?:[^\x00-\x20\x7f]+(?: +(?:H(?:T(?:T(?:P(?:/(?:1(?:\.(?:[0-9]\r?)?)?)?)?)?)?)?)?)?)?)?"
    rb"|H(?:T(?:T(?:P(?:/(?:1(?:\.(?:[0-9](?: +[0-9]{0,3})?)?)?)?)?)?)?)?"
)
REQUEST_LINE = re.compile(r"([" + TCHARS.decode() + r"]+) +([^\x00-\x20\x7f]+) +(HTTP/1\.[0-9])")
STATUS_LINE = re.compile(r"(HTTP/1\.[0-9]) +([0-9]{3})(?: +(.*))?")
CHUNK_SIZE_LINE = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\n]*)?\r?\Z")
HEX_DIGITS = b"0123456789ABCDEFabcdef"


def body_framing(request_method: str | None, status: int | None, content_length: int | None, chunked: bool) -> int:
    """How a message's body is delimited (RFC 9112 section 6.3), from its head
    alone: ``status`` None for a request; ``request_method`` is that of the
    request a response answers (None when unknown)."""
    if status is None:
        if chunked:
            return BODY_CHUNKED
        return BODY_LENGTH if content_length else BODY_NONE
    if status < 200 and status != 101:
        return BODY_INTERIM
    if status == 101 or (request_method == "CONNECT" and status < 300):
        return BODY_UPGRADE
    if request_method == "HEAD" or status == 204 or status == 304:
        return BODY_NONE
    if chunked:  # chunked wins over Content-Length
        return BODY_CHUNKED
    if content_length is not None:
        return BODY_LENGTH if content_length else BODY_NONE
    return BODY_UNTIL_CLOSE


def plain_request_line(parts: list[str]) -> bool:
    """The common request line: one space apart, a letters-only method, a printable target."""
    method, target, version = parts
    return (
        len(version) == 8 and version[:7] == "HTTP/1." and version[7].isdigit()
        and method.isalpha() and method.isascii() and target.isprintable() and target != ""
    )


def parse_fields(text: str) -> list[tuple[str, str]]:
    """Header fields from ``name: value`` lines; obs-fold lines continue the previous value."""
    fields: list[tuple[str, str]] = []
    for line in text.split("\n"):
        name, sep, value = line.partition(":")
        if name[:1] in (" ", "\t"):
            if fields:
                prev = fields[-1]
                fields[-1] = (prev[0], (prev[1] + " " + line.strip(" \t\r")).strip(" "))
        elif sep:
            fields.append((name, value.strip(" \t\r")))
        # lenient: any other line is not a field and is ignored
    return fields


def content_length(value: str) -> int | None:
    """The length a Content-Length value gives, or None when it gives none."""
    if value.isdigit() and len(value) <= 18:
        return int(value)
    # Lenient: the same number repeated ("5, 5"), as some proxies send.
    parts = {p.strip() for p in value.split(",")}
    if len(parts) == 1:
        (v,) = parts
        if v.isascii() and v.isdigit() and len(v) <= 18:
            return int(v)
    return None


def head_end(b, start: int, n: int) -> tuple[int, int]:
    """Where a head or a trailer section that begins before ``start`` ends in
    ``b[:n]`` (``n`` is ``len(b)``): (the index of its last line's LF, the
    index after the empty line), accepting bare LF line ends too; (-1, -1)
    when not yet. The first "\n\r\n" or "\n\n" wins; a "\n\n" whose second
    LF begins a "\n\r\n" counts as that "\n\r\n" (as two finds would have it).

    Compiled: one pass over the bytes through a char pointer (a C loop, a
    few instructions a byte), where two ``find`` calls cost more in their
    calls than in their scans on a head of a few hundred bytes. Interpreted,
    a loop per byte would cost far more than the two finds (the unit tests
    run both forms, and check the two agree)."""
    if not COMPILED:
        return head_end_by_finds(b, start, n)
    p = b
    i = start
    while i < n:
        if p[i] == 10 and i + 1 < n:
            c = p[i + 1]
            if c == 13:
                if i + 2 < n and p[i + 2] == 10:
                    return i, i + 3
            elif c == 10:
                if i + 3 < n and p[i + 2] == 13 and p[i + 3] == 10:
                    return i + 1, i + 4
                return i, i + 2
        i += 1
    return -1, -1


def head_end_by_finds(b, start: int, n: int) -> tuple[int, int]:
    """``head_end`` by two finds: what the interpreted form runs."""
    e = b.find(b"\n\r\n", start)
    e2 = b.find(b"\n\n", start, e if e >= 0 else n)
    if e2 >= 0:
        return e2, e2 + 2
    if e >= 0:
        return e, e + 3
    return -1, -1
