"""Pairs per second through the capture core on one core.

Reassembly + HTTP parse + pairing + message encoding, one DataEvent per
direction per message, as the worker calls them. Run from the repo root:
``.venv/bin/python bench/bench_core.py [seconds-per-case]``.
"""

from __future__ import annotations

import gzip
import os
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import orjson  # noqa: E402

from akto_collector.events import RECV, SEND, ROLE_SERVER, ConnId, ConnMeta, DataEvent  # noqa: E402
from akto_collector.message import MessageEncoder  # noqa: E402
from akto_collector.protocols.streams import ConnectionStream, CoreLimits  # noqa: E402


def _request() -> bytes:
    """A 600-byte POST with a small JSON body, as a browser-ish client sends it."""
    body = orjson.dumps({"user": "alice", "items": [1, 2, 3], "note": "x" * 40})
    head = (
        "POST /api/v1/orders?source=web&page=2 HTTP/1.1\r\n"
        "Host: shop.internal:8080\r\n"
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0\r\n"
        "Accept: application/json, text/plain, */*\r\n"
        "Accept-Language: en-US,en;q=0.9\r\n"
        "Accept-Encoding: gzip, deflate, br\r\n"
        "Content-Type: application/json\r\n"
        "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0In0.abc\r\n"
        "X-Request-Id: 6f1c2b0e-8d3a-4c1b-9e7f-2a5d4c3b2a10\r\n"
        "Cookie: session=abcdef0123456789; theme=dark\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    pad = 600 - len(head) - len(body) - len(b"X-Pad: \r\n")  # bring the request to about 600 bytes
    if pad > 0:
        head = head.replace(b"X-Request-Id: ", b"X-Pad: " + b"p" * pad + b"\r\nX-Request-Id: ", 1)
    return head + body


def _json_body(size: int) -> bytes:
    items = []
    while len(orjson.dumps(items)) < size:
        items.append({"id": len(items), "name": f"item-{len(items)}", "price": 12.5, "tags": ["a", "b"]})
    return orjson.dumps(items)


def _response_plain() -> bytes:
    body = _json_body(1500)
    return (
        "HTTP/1.1 200 OK\r\n"
        "Date: Wed, 26 Nov 2025 07:00:00 GMT\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        "Cache-Control: no-store\r\n"
        "X-Request-Id: 6f1c2b0e-8d3a-4c1b-9e7f-2a5d4c3b2a10\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _response_chunked_gzip() -> bytes:
    z = gzip.compress(_json_body(1500))
    half = len(z) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (z[:half], z[half:])) + b"0\r\n\r\n"
    return (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: application/json\r\n"
        "Content-Encoding: gzip\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode() + chunks


def pairs_500(cs, enc, meta, conn, pos, request: bytes, response: bytes) -> int:
    """500 request/response rounds through on_event + encode, one DataEvent per message."""
    lreq, lresp = len(request), len(response)
    pairs = 0
    for _ in range(500):
        ts = time.time()
        cs.on_event(DataEvent(conn, ts, RECV, pos[0], lreq, 0, 0, request))
        pos[0] += lreq
        for ex in cs.on_event(DataEvent(conn, ts, SEND, pos[1], lresp, 0, 0, response)):
            enc.encode(ex, meta)
            pairs += 1
        pos[1] += lresp
    return pairs


def run(name: str, request: bytes, response: bytes, seconds: float, rounds: int = 5) -> float:
    """Pairs/s through on_event + encode; best and median of ``rounds`` (the host may be shared)."""
    counters: Counter = Counter()
    conn = ConnId(1234, 7, 0)
    cs = ConnectionStream(conn, CoreLimits(), counters, role_hint=ROLE_SERVER)
    enc = MessageEncoder("1000000", "0", "bench")
    meta = ConnMeta(pid=1234, fd=7, comm="python3", local="10.0.0.2:8080", peer="10.0.0.1:50000")
    pos = [0, 0]
    rates = []
    for _ in range(rounds):
        pairs = 0
        start = time.perf_counter()
        deadline = start + seconds / rounds
        while True:
            pairs += pairs_500(cs, enc, meta, conn, pos, request, response)
            now = time.perf_counter()
            if now >= deadline:
                break
        rates.append(pairs / (now - start))
    rates.sort()
    best, median = rates[-1], rates[len(rates) // 2]
    drops = dict(counters)
    print(
        f"{name:<44} best {best:>9,.0f}  median {median:>9,.0f} pairs/s ({1e6 / best:.1f} µs/pair)"
        f"  ({len(request)} B request, {len(response)} B response)" + (f"  counters={drops}" if drops else "")
    )
    return best


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    req = _request()
    run("(a) 600 B request + 1.5 KB JSON response", req, _response_plain(), seconds)
    run("(b) chunked gzip JSON response", req, _response_chunked_gzip(), seconds)


if __name__ == "__main__":
    main()
