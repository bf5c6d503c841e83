"""One worker's whole per-pair path without the kernel or Kafka: raw ring
buffer records (as the kernel writes them, as the supervisor batches them)
→ decode → reassembly/parse/pair → filters → encode → JSON-lines sink to
/dev/null. Prints pairs/s per core and µs per pair.

    .venv/bin/python bench/bench_worker.py [--pairs 100000] [--traffic api|nginx]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from akto_collector.config import Settings  # noqa: E402
from akto_collector.kernel.records import KIND_DATA, RECORD  # noqa: E402
from akto_collector.worker import Worker  # noqa: E402

REQ_BODY = b'{"items":[' + b'{"sku":"A-1","qty":1},' * 17 + b'{"x":1}]}'
REQ = (b"POST /api/v1/orders?id=42 HTTP/1.1\r\nHost: shop.local:8080\r\nUser-Agent: bench/1.0\r\n"
       b"Accept: application/json\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
       b"X-Request-Id: 0123456789abcdef\r\n\r\n" % len(REQ_BODY)) + REQ_BODY
BODY = b'{"items":[' + b",".join(b'{"id":%d,"name":"item-%d","price":%d.99}' % (i, i, i) for i in range(38)) + b"]}"
RESP = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: keep-alive\r\n\r\n" % len(BODY)) + BODY
# --traffic nginx: what bench_e2e.py's wrk and nginx exchange (a GET with Host
# alone; nginx's own response fields for a static file, ETag among them).
NGINX_REQ = b"GET /api/items HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
NGINX_RESP = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 23:20:00 GMT\r\n"
              b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n"
              b"Last-Modified: Tue, 01 Dec 2026 23:00:00 GMT\r\nConnection: keep-alive\r\n"
              b'ETag: "6756a1b0-5f4"\r\nAccept-Ranges: bytes\r\n\r\n' % len(BODY)) + BODY


def record(gen: int, pos: int, direction: int, data: bytes, fd: int = 7) -> bytes:
    return RECORD.pack(0, gen, pos, 4242, fd, len(data), 0, len(data), KIND_DATA, 0, direction, 1, 1, 0) + data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--traffic", choices=("api", "nginx"), default="api",
                    help="api: a JSON POST and its answer; nginx: bench_e2e's GET and nginx's answer")
    ap.add_argument("--setup-only", action="store_true",
                    help="build the records and stop (bench_instructions.py subtracts what that costs)")
    args = ap.parse_args()
    req, resp = (REQ, RESP) if args.traffic == "api" else (NGINX_REQ, NGINX_RESP)
    settings = Settings.from_env({"AKTO_WORKERS": "1"})
    worker = Worker(0, settings, os.devnull)
    # 64 keep-alive connections, pairs in batches of 256 records like a 10 ms drain
    conns = 64
    pos = {c: [0, 0] for c in range(conns)}
    batches, batch = [], []
    for i in range(args.pairs):
        c = i % conns
        batch.append(record(c + 1, pos[c][1], 1, req, fd=10 + c))
        pos[c][1] += len(req)
        batch.append(record(c + 1, pos[c][0], 0, resp, fd=10 + c))
        pos[c][0] += len(resp)
        if len(batch) >= 256:
            batches.append(b"".join(batch))
            batch = []
    if batch:
        batches.append(b"".join(batch))
    if args.setup_only:
        return
    worker.metas  # warm: connection metadata resolved once per connection below
    t0 = time.process_time()
    for blob in batches:
        worker.handle_batch(blob)
        worker.sink.poll()
    worker.sink.flush(5)
    cpu = time.process_time() - t0
    pairs = worker.counters["pairs"]
    print(f"worker path (decode → parse → filter → encode → sink), {len(req)} B request + {len(resp)} B response:")
    print(f"  {pairs:,} pairs, {pairs / cpu:,.0f} pairs/s per core, {cpu / pairs * 1e6:.1f} us per pair")
    print("  counters:", {k: v for k, v in sorted(worker.counters.items()) if not k.startswith("sink.")})


if __name__ == "__main__":
    main()
