"""Properties: any chunking of valid exchanges gives exactly those pairs; any bytes never raise and stay bounded."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from akto_collector.events import FLAG_CUT, FLAG_TLS, RECV, ROLE_CLIENT, ROLE_SERVER, ROLE_UNKNOWN, SEND, DataEvent
from akto_collector.protocols.streams import ConnectionStream, CoreLimits
from test_http_replay import CONN, Wire

TOKEN = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-!#$%&'*+.^_`|~", min_size=1, max_size=12)
METHOD = st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]), TOKEN)
TARGET = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x2FF, exclude_characters="\x7f"), min_size=0, max_size=30).map(lambda s: "/" + s)
HEADER = st.tuples(
    TOKEN.filter(lambda n: n.lower() not in ("content-length", "transfer-encoding", "content-encoding", "upgrade", "connection")),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=30).map(str.strip),
)
BODY = st.binary(max_size=300)


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, i = [], 0
    for n in sizes:
        if i >= len(body):
            break
        part = body[i:i + max(1, n)]
        out.append(b"%x\r\n%s\r\n" % (len(part), part))
        i += len(part)
    if i < len(body):
        out.append(b"%x\r\n%s\r\n" % (len(body) - i, body[i:]))
    return b"".join(out) + b"0\r\n\r\n"


@st.composite
def exchanges(draw):
    method = draw(METHOD)
    target = draw(TARGET)
    headers = draw(st.lists(HEADER, max_size=5))
    req_body = draw(BODY)
    use_chunked = draw(st.booleans())
    sizes = draw(st.lists(st.integers(1, 80), max_size=6))
    head = "%s %s HTTP/1.1\r\n" % (method, target) + "".join("%s: %s\r\n" % h for h in headers)
    if req_body and use_chunked:
        req = head.encode() + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(req_body, sizes)
    else:
        req = head.encode() + (b"Content-Length: %d\r\n" % len(req_body) if req_body else b"") + b"\r\n" + req_body
    status = draw(st.sampled_from([200, 201, 204, 304, 404, 500]))
    resp_body = b"" if status in (204, 304) else draw(BODY)
    interim = draw(st.booleans()) and method != "HEAD"
    resp_chunked = draw(st.booleans())
    rhead = b"HTTP/1.1 %d X\r\nServer: t\r\n" % status
    if resp_chunked and status not in (204, 304):
        wire_body = chunked(resp_body, sizes)
        resp = rhead + b"Transfer-Encoding: chunked\r\n\r\n" + (b"" if method == "HEAD" else wire_body)
    else:
        resp = rhead + b"Content-Length: %d\r\n\r\n" % len(resp_body) + (b"" if method == "HEAD" else resp_body)
    if interim:
        resp = b"HTTP/1.1 100 Continue\r\n\r\n" + resp
    expected = (method, target, status, req_body, b"" if method == "HEAD" else resp_body)
    return req, resp, expected


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    xs=st.lists(exchanges(), min_size=1, max_size=5),
    pipeline=st.integers(1, 3),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
    role=st.sampled_from([ROLE_SERVER, ROLE_CLIENT]),
    hint=st.booleans(),
)
def test_any_chunking_of_valid_exchanges_gives_exactly_those_pairs(xs, pipeline, cuts, role, hint):
    counters = Counter()
    cs = ConnectionStream(CONN, CoreLimits(), counters, role_hint=role if hint else ROLE_UNKNOWN)
    req_dir, resp_dir = (RECV, SEND) if role == ROLE_SERVER else (SEND, RECV)
    pos = {SEND: 0, RECV: 0}
    got = []

    def send(direction, data):
        for piece in split(data, cuts):
            got.extend(cs.on_event(DataEvent(CONN, 1.0, direction, pos[direction], len(piece), 0, 0, piece)))
            pos[direction] += len(piece)

    for g in range(0, len(xs), pipeline):
        group = xs[g:g + pipeline]
        send(req_dir, b"".join(x[0] for x in group))
        send(resp_dir, b"".join(x[1] for x in group))
    assert [(e.request.method, e.request.target, e.response.status, e.request.body, e.response.body) for e in got] == [
        x[2] for x in xs
    ]
    assert all(e.role == role for e in got)
    assert not any(e.request.body_cut or e.response.body_cut for e in got)
    assert cs.buffered == 0


LIMITS = CoreLimits(max_body_bytes=500, max_head_bytes=1000, max_line_bytes=600, max_pending=4)
BOUND = 2 * (LIMITS.max_head_bytes + LIMITS.max_line_bytes + 4096 + LIMITS.max_body_bytes) + LIMITS.max_pending * LIMITS.max_body_bytes

EVENT = st.tuples(
    st.sampled_from([SEND, RECV]),
    st.one_of(
        st.binary(max_size=400),
        st.sampled_from([b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"Content-Length: 5\r\n", b"\r\n", b"0\r\n",
                         b"Transfer-Encoding: chunked\r\n", b"HTTP/1.1 101 S\r\n\r\n", b"\x16\x03\x01", b"HEAD / HTTP/1.0\n\n"]),
    ),
    st.integers(0, 50),  # bytes lost before this event
    st.sampled_from([0, 0, 0, FLAG_CUT, FLAG_TLS]),
)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(EVENT, max_size=40), hint=st.sampled_from([ROLE_UNKNOWN, ROLE_SERVER, ROLE_CLIENT]))
def test_arbitrary_bytes_never_raise_and_stay_bounded(events, hint):
    counters = Counter()
    cs = ConnectionStream(CONN, LIMITS, counters, role_hint=hint)
    pos = {SEND: 0, RECV: 0}
    for k, (direction, data, lost, flags) in enumerate(events):
        pos[direction] += lost
        total = len(data) + (7 if flags & FLAG_CUT else 0)
        for ex in cs.on_event(DataEvent(CONN, float(k), direction, pos[direction], total, 0, flags, data)):
            assert ex.request is not None and ex.response is not None
        pos[direction] += total
        assert cs.buffered <= BOUND
    cs.on_close(99.0)
    assert cs.buffered == 0


@given(st.binary(max_size=40).map(lambda b: bytes(b"\r\nab"[c % 4] for c in b)), st.integers(0, 40), st.booleans())
def test_head_end_agrees_with_two_finds(data, start, as_bytearray):
    # Compiled, head_end is a byte loop: it must find what the interpreted form's two finds find.
    from akto_collector.protocols.http1_syntax import head_end, head_end_by_finds

    b = bytearray(data) if as_bytearray else data
    start = min(start, len(b))
    assert head_end(b, start, len(b)) == head_end_by_finds(b, start, len(b))


# Field names as a parser may meet them: case variants of one another and of
# Host, repeats, a byte beyond ASCII, characters that | 32 maps alike ("@" and "`").
NAME = st.sampled_from(["Host", "host", "HOST", "hoSt", "Accept", "accept", "X-A", "x-a", "ETag", "Etag",
                        "Set-Cookie", "set-cookie", "Cookie", "a@", "a`", "A[", "a{", "Caf\u00e9", "X-\u00c9",
                        "Content-Type"])


@settings(max_examples=300, deadline=None)
@given(names=st.lists(NAME, max_size=40), response=st.booleans(), trailer=st.booleans())
def test_the_parsers_name_check_gives_the_header_map_case_folding_gives(names, response, trailer):
    """What the HTTP/1 parser notes about a head's names (HttpRequest.host_name) only
    saves the encoder its case-folding: the header map, its order included, is the same."""
    from akto_collector.message import header_map

    fields = b"".join(b"%s: v%d\r\n" % (n.encode("latin-1"), i) for i, n in enumerate(names))
    tail = b"0\r\nX-T: t\r\n\r\n" if trailer else b"0\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\n" + fields + b"Transfer-Encoding: chunked\r\n\r\n" + tail
    req = b"GET / HTTP/1.1\r\n" + fields + b"\r\n"
    cs = ConnectionStream(CONN, CoreLimits(), Counter(), role_hint=ROLE_SERVER)
    w = Wire()
    (x,) = cs.on_event(w.call(RECV, req)) + cs.on_event(w.call(SEND, resp))
    for msg in (x.request, x.response) if response else (x.request,):
        checked = header_map(msg.headers, msg.host_name)
        assert list(checked.items()) == list(header_map(msg.headers).items())
        if msg.host_name is not None:
            lows = [n.lower() for n, _ in msg.headers]
            assert len(set(lows)) == len(lows)
            assert msg.host_name == next((n for n, _ in msg.headers if n.lower() == "host"), "")
