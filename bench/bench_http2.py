"""HTTP/2 and gRPC pairs per second through the capture core on one core, beside HTTP/1.

Reassembly (ConnectionStream) + HTTP/2 framing, HPACK, pairing + message
encoding, one DataEvent per write, as the worker calls them (see
bench_core.py, whose case (a) is the HTTP/1 figure printed first). The
HTTP/2 connections are generated with the h2 package beforehand: each
request and each response is one write, with the WINDOW_UPDATEs h2 sends,
and every request has a new path and request id (literals, as on a real
connection; the rest is indexed). Last, our HPACK decoder against
``hpack.Decoder`` on a whole connection's header blocks. Run from the repo
root: ``.venv/bin/python bench/bench_http2.py [seconds-per-case]``; with
``AKTO_PURE_PYTHON=1`` every module runs as plain Python (the HTTP/2 ones are
not compiled yet, so that is the like-for-like comparison).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

if os.environ.get("AKTO_PURE_PYTHON", "") not in ("", "0"):
    import importlib.abc
    import importlib.util

    class _SourceOnly(importlib.abc.MetaPathFinder):
        """akto_collector's modules from their .py files, as tests/conftest.py does."""

        def find_spec(self, name, path=None, target=None):
            if not name.startswith("akto_collector.") or not path:
                return None
            source = os.path.join(path[0], name.rpartition(".")[2] + ".py")
            return importlib.util.spec_from_file_location(name, source) if os.path.exists(source) else None

    sys.meta_path.insert(0, _SourceOnly())

import bench_core  # noqa: E402
from h2.config import H2Configuration  # noqa: E402
from h2.connection import H2Connection  # noqa: E402
from h2.events import DataReceived  # noqa: E402
from hpack import Decoder  # noqa: E402

from akto_collector.events import RECV, ROLE_SERVER, SEND, ConnId, ConnMeta, DataEvent  # noqa: E402
from akto_collector.message import MessageEncoder  # noqa: E402
from akto_collector.protocols import hpack as our_hpack  # noqa: E402
from akto_collector.protocols.hpack import HeaderDecoder  # noqa: E402
from akto_collector.protocols.streams import ConnectionStream, CoreLimits  # noqa: E402

PAIRS = 2000  # pairs per generated connection; the bench replays fresh copies of it

BROWSER = [
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"),
    ("accept", "application/json, text/plain, */*"),
    ("accept-language", "en-US,en;q=0.9"),
    ("accept-encoding", "gzip, deflate, br"),
    ("authorization", "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0In0.abc"),
    ("cookie", "session=abcdef0123456789; theme=dark"),
]


def _frame(msg: bytes) -> bytes:
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def connection(grpc: bool, pairs: int = PAIRS):
    """[(direction, bytes)] of one connection seen from the server, and its header blocks per direction."""
    c = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
    s = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
    c.initiate_connection()
    s.initiate_connection()
    writes = []

    def deliver(src, dst, direction):
        data = src.data_to_send()
        if data:
            writes.append((direction, data))
            for ev in dst.receive_data(data):
                if isinstance(ev, DataReceived) and ev.flow_controlled_length:
                    dst.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)

    deliver(c, s, RECV)
    deliver(s, c, SEND)
    body = bench_core._json_body(1500)
    for k in range(pairs):
        sid = c.get_next_available_stream_id()
        rid = f"6f1c2b0e-8d3a-4c1b-9e7f-{k:012x}"
        if grpc:
            c.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", "/shop.v1.Orders/GetOrder"),
                                 (":authority", "orders.internal:50051"), ("content-type", "application/grpc"),
                                 ("user-agent", "grpc-go/1.60.1"), ("te", "trailers"), ("grpc-timeout", "999m"),
                                 ("x-request-id", rid)])
            c.send_data(sid, _frame(b"\x0a\x10order-%08d\x10\x02\x1a\x05alice" % k), end_stream=True)
        else:
            c.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                                 (":path", f"/api/v1/orders/{k}?source=web&page=2"),
                                 (":authority", "shop.internal:8080"), *BROWSER, ("x-request-id", rid)],
                           end_stream=True)
        deliver(c, s, RECV)
        if grpc:
            s.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                                 ("grpc-accept-encoding", "gzip")])
            s.send_data(sid, _frame(b"\x0a\x10order-%08d" % k + b"\x12\x40" + b"p" * 64 + b"\x18\x95\x01" * 40))
            s.send_headers(sid, [("grpc-status", "0"), ("grpc-message", "")], end_stream=True)
        else:
            s.send_headers(sid, [(":status", "200"), ("date", "Wed, 26 Nov 2025 07:00:00 GMT"),
                                 ("content-type", "application/json; charset=utf-8"), ("cache-control", "no-store"),
                                 ("x-request-id", rid), ("content-length", str(len(body)))])
            s.send_data(sid, body, end_stream=True)
        deliver(s, c, SEND)
    return writes


class Case:
    """One case of the bench: a connection replayed through on_event + encode, timed in slices."""

    def __init__(self, name: str, writes=None, request: bytes = b"", response: bytes = b""):
        self.name = name
        self.writes = writes  # HTTP/2: the generated connection; None: HTTP/1 (bench_core's loop)
        self.request, self.response = request, response
        self.counters: Counter = Counter()
        self.rates: list = []
        self.conn = ConnId(1234, 7, 0)
        self.enc = MessageEncoder("1000000", "0", "bench")
        self.meta = ConnMeta(pid=1234, fd=7, comm="python3", local="10.0.0.2:8080", peer="10.0.0.1:50000")
        self.cs = ConnectionStream(self.conn, CoreLimits(), self.counters, role_hint=ROLE_SERVER)  # HTTP/1's
        self.pos = [0, 0]

    def slice(self, seconds: float) -> None:
        pairs = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            pairs += self._h2() if self.writes is not None else self._h1()
            now = time.perf_counter()
            if now >= deadline:
                break
        self.rates.append(pairs / (now - start))

    def _h1(self) -> int:
        """bench_core.run's loop: 500 pairs, one DataEvent per message."""
        return bench_core.pairs_500(self.cs, self.enc, self.meta, self.conn, self.pos, self.request, self.response)

    def _h2(self) -> int:
        """One fresh connection replaying ``writes`` (PAIRS pairs)."""
        conn, enc, meta = self.conn, self.enc, self.meta
        # A new connection with the same literals would find them in the Huffman
        # cache; a real one brings new paths and ids: start with it empty.
        our_hpack._huff_cache.clear()
        cs = ConnectionStream(conn, CoreLimits(), self.counters, role_hint=ROLE_SERVER)
        pos = [0, 0]
        pairs = 0
        for d, data in self.writes:
            ln = len(data)
            for ex in cs.on_event(DataEvent(conn, time.time(), d, pos[d], ln, 0, 0, data)):
                enc.encode(ex, meta)
                pairs += 1
            pos[d] += ln
        return pairs

    def report(self) -> float:
        rates = sorted(self.rates)
        best, median = rates[-1], rates[len(rates) // 2]
        if self.writes is not None:
            req = sum(len(d) for dr, d in self.writes[2:] if dr == RECV) // PAIRS
            resp = sum(len(d) for dr, d in self.writes[2:] if dr == SEND) // PAIRS
            sizes = f"~{req} B request, ~{resp} B response on the wire"
        else:
            sizes = f"{len(self.request)} B request, {len(self.response)} B response"
        drops = {k: v for k, v in self.counters.items() if "dropped" in k or "unknown" in k or "error" in k}
        print(f"{self.name:<40} best {best:>8,.0f}  median {median:>8,.0f} pairs/s ({1e6 / best:5.1f} µs/pair"
              f", median {1e6 / median:5.1f})  ({sizes})" + (f"  counters={drops}" if drops else ""))
        return best


def header_blocks(writes):
    """The HPACK blocks of each direction, in order (HEADERS frames, END_HEADERS: no CONTINUATION here)."""
    out = {SEND: [], RECV: []}
    for d, data in writes:
        i = 24 if data.startswith(b"PRI * HTTP/2.0") else 0
        while i + 9 <= len(data):
            ln = int.from_bytes(data[i:i + 3], "big")
            if data[i + 3] == 1:
                flags = data[i + 4]
                p = i + 9 + (5 if flags & 0x20 else 0)
                pad = 0
                if flags & 8:
                    pad = data[p]
                    p += 1
                out[d].append(data[p:i + 9 + ln - pad])
            i += 9 + ln
    return out


def bench_hpack(name: str, writes, seconds: float) -> None:
    blocks = header_blocks(writes)
    n = len(blocks[SEND]) + len(blocks[RECV])

    def ours():
        our_hpack._huff_cache.clear()
        for d in (SEND, RECV):
            dec = HeaderDecoder(Counter())
            dec.start()
            for b in blocks[d]:
                dec.decode(b)

    def theirs():
        for d in (SEND, RECV):
            dec = Decoder()
            for b in blocks[d]:
                dec.decode(b)

    for label, fn in (("ours", ours), ("hpack", theirs)):
        best = float("inf")
        deadline = time.perf_counter() + seconds / 2
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        print(f"  HPACK {name:<10} {label:<6} {1e6 * best / n:6.2f} µs/block  ({n} blocks, both directions)")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    get = connection(grpc=False)
    grpc = connection(grpc=True)
    cases = [
        Case("(a) HTTP/1: 600 B request + 1.5 KB JSON", request=bench_core._request(),
             response=bench_core._response_plain()),
        Case("(b) HTTP/2 GET + 1.5 KB JSON response", get),
        Case("(c) gRPC unary (trailers)", grpc),
    ]
    for case in cases:
        case.slice(0.05)  # warm up (the Huffman automaton is built at first use)
        case.rates.clear()
    # The cases take turns, slice by slice, so a busy host weighs on all of them alike.
    rounds = 12
    for _ in range(rounds):
        for case in cases:
            case.slice(seconds / rounds)
    h1, h2, rpc = (case.report() for case in cases)
    print(f"cost per pair relative to HTTP/1 (best): HTTP/2 GET {h1 / h2:.2f}x, gRPC unary {h1 / rpc:.2f}x")
    bench_hpack("GET", get, seconds)
    bench_hpack("gRPC", grpc, seconds)


if __name__ == "__main__":
    main()
