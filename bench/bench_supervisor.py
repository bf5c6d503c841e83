"""The supervisor's data plane alone: drain a ring buffer laid out as the
kernel lays it out, route each record to its worker's batch, hand each
worker its batch as one blob (workers are stand-ins that keep nothing).
Prints µs per pair; `bench_instructions.py --bench supervisor` counts its
instructions per pair instead (a figure the host's noise cannot move).

    .venv/bin/python bench/bench_supervisor.py [--pairs 200000] [--workers 2]

The records are bench_worker.py's --traffic nginx pair (a 49-byte request,
a 1.8 KB response), each one record, as the kernel sends a gathered call.
The ring is a memfd (the kernel maps its data area twice in a row; the
records here never wrap, so one copy does). What this leaves out: the
sender threads' pipe writes (per batch, not per record).
"""

from __future__ import annotations

import argparse
import mmap
import os
import select
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from akto_collector.kernel.records import HDR_SIZE, KIND_DATA, LEN_OFFSET, RECORD  # noqa: E402
from akto_collector.kernel.ringbuf import RingReader  # noqa: E402
from akto_collector.supervisor.router import Router  # noqa: E402
from bench_worker import NGINX_REQ, NGINX_RESP  # noqa: E402

PAGE = mmap.PAGESIZE
SIZE = 8 << 20


class _NoEpoll:  # epoll refuses a memfd; the bench never waits
    def register(self, fd, events):
        pass

    def close(self):
        pass


class _Probes:
    def __init__(self, ring: RingReader):
        self.ring = ring

    def drain(self, out: list) -> int:
        return self.ring.drain(out)


class _Worker:
    queued_bytes = 0

    def __init__(self):
        self.blobs = self.records = 0

    def submit(self, blob, records: int) -> bool:
        self.blobs += 1
        self.records += records
        return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    fd = os.memfd_create("ring")
    os.ftruncate(fd, 2 * PAGE + 2 * SIZE)
    mem = mmap.mmap(fd, 2 * PAGE + 2 * SIZE)
    # One drain's worth: 64 connections' pairs, as at ~6k pairs/s with 10 ms drains.
    pos = 0
    for i in range(64):
        for direction, data in ((1, NGINX_REQ), (0, NGINX_RESP)):
            rec = RECORD.pack(0, 1, 0, 4242, 10 + i, len(data), 0, len(data), KIND_DATA, 0, direction, 1, 1, 0) + data
            mem[2 * PAGE + pos:2 * PAGE + pos + 8 + len(rec)] = struct.pack("<II", len(rec), 0) + rec
            pos += (len(rec) + 15) & ~7
    select_epoll, select.epoll = select.epoll, _NoEpoll
    try:
        ring = RingReader(fd, SIZE, head=HDR_SIZE, used_at=LEN_OFFSET)
    finally:
        select.epoll = select_epoll
    probes = _Probes(ring)
    router = Router(args.workers)
    workers = [_Worker() for _ in range(args.workers)]
    rounds = args.pairs // 64
    t0 = time.process_time()
    for _ in range(rounds):
        mem[0:8] = struct.pack("<Q", 0)  # consumer back at the start,
        mem[PAGE:PAGE + 8] = struct.pack("<Q", pos)  # producer past the drain's records
        router.drain(probes)
        router.flush(workers)
    cpu = time.process_time() - t0
    pairs = rounds * 64
    assert sum(w.records for w in workers) == 2 * pairs
    print(f"supervisor data plane (drain → route → one blob per worker), {args.workers} workers, "
          f"{len(NGINX_REQ)} + {len(NGINX_RESP)} B records:")
    print(f"  {pairs:,} pairs, {cpu / pairs * 1e6:.2f} us per pair ({cpu / pairs / 2 * 1e6:.2f} per record)")


if __name__ == "__main__":
    main()
