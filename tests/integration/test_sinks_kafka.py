"""KafkaSink and HeartbeatSender against a real Kafka-compatible broker (Tansu) on loopback.

Skipped when the tansu binary is missing, failed instead when
AKTO_REQUIRE_BROKER=1. The outage tests take the broker off the network
with TansuBroker.stop() (its data survives, like a Kafka restart with a
disk) and bring it back on the same port.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import orjson
import pytest
from structlog.testing import capture_logs

try:  # tests/ may or may not be a package, depending on who runs pytest how
    from tests.integration.broker import TansuBroker, free_port, require_tansu
except ImportError:
    from broker import TansuBroker, free_port, require_tansu

from akto_collector.config import Settings
from akto_collector.sinks import HeartbeatSender, KafkaSink, make_sink

TOPIC = "akto.api.logs"


def settings(bootstrap: str, **overrides):
    """The collector's own Settings (defaults from its table), for a sink of this broker."""
    base = dict(kafka_brokers=(bootstrap,), kafka_topic=TOPIC, kafka_poll_interval=0.1, buffer_threshold_mb=64,
                node_name="test", workers=1, daemonset_id="ds-test")
    base.update(overrides)
    return Settings(**base)


def message(i: int) -> tuple[bytes, bytes]:
    """Key and value of the i-th message; every message has the same size."""
    key = b"10.0.0.%d" % (i % 5)
    return key, orjson.dumps({"seq": f"{i:08d}", "path": f"/api/items/{i:08d}", "pad": "x" * 200})


def seq(value: bytes) -> int:
    return int(orjson.loads(value)["seq"])


def seqs_by_key(records) -> dict[bytes, list[int]]:
    out: dict[bytes, list[int]] = defaultdict(list)
    for r in records:  # consume_all yields partition order, and a key lives on one partition
        out[r.key].append(seq(r.value))
    return out


def assert_exactly(records, sent: list[int]) -> None:
    got = [seq(r.value) for r in records]
    assert len(got) == len(sent), f"{len(got)} records for {len(sent)} sent"
    assert set(got) == set(sent)
    for key, seqs in seqs_by_key(records).items():
        assert seqs == sorted(seqs), f"out of order for key {key!r}"
        assert all(message(s)[0] == key for s in seqs)


@pytest.fixture(scope="module")
def broker():
    require_tansu()
    with TansuBroker() as b:
        yield b


@pytest.fixture
def own_broker():
    """A broker this test may stop and restart."""
    require_tansu()
    with TansuBroker() as b:
        yield b


@pytest.mark.parametrize("path", ["accumulator", "send"])
def test_messages_arrive_with_key_and_value_in_order(broker, path):
    """Both hand-over paths: the lean accumulator append and plain KafkaProducer.send()."""
    from kafka.partitioner.default import murmur2

    topic = f"order-{path}"
    counters = Counter()
    sink = make_sink(settings(broker.bootstrap, kafka_topic=topic), counters=counters, max_buffer_bytes=64 << 20)
    assert isinstance(sink, KafkaSink)
    n = 3000
    for i in range(n):
        sink.send(*message(i))
        if i % 100 == 0:
            sink.poll()
            if path == "send":
                sink._append = False
            else:
                assert sink._producer is None or sink._append, "kafka-python internals not as expected"
    sink.flush(30)
    assert sink.state == "connected"
    assert counters["sink.sent"] == counters["sink.delivered"] == n
    partitions = len(sink._partitions)
    sink.close(5)

    records = broker.consume_all(topic, expect=n)
    assert_exactly(records, list(range(n)))
    for r in records:
        assert (r.key, r.value) == message(seq(r.value))
        # the partition kafka-python's default partitioner picks (murmur2, as in Java)
        assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % partitions


def test_too_large_message_is_refused_and_counted_the_rest_delivered(broker):
    counters = Counter()
    sink = KafkaSink(settings(broker.bootstrap, kafka_topic="large"), counters=counters)
    sink.send(*message(0))
    sink.send(b"10.0.0.1", b"x" * (2 << 20))  # above max_request_size (1 MiB)
    sink.send(b"", message(1)[1])  # no key: kafka-python picks the partition
    sink.send(*message(2))
    with capture_logs() as logs:
        sink.flush(30)
    sink.close(5)
    assert counters["sink.dropped.error"] == 1
    assert counters["sink.delivered"] == 3
    assert [e["event"] for e in logs].count("kafka rejected a message") == 1
    assert sorted(seq(r.value) for r in broker.consume_all("large", expect=3)) == [0, 1, 2]


def test_outage_delivers_everything_once_in_order(own_broker):
    """Broker away for ~7 s during steady sending: all arrive afterwards, none twice."""
    counters = Counter()
    sink = KafkaSink(settings(own_broker.bootstrap), counters=counters, max_buffer_bytes=64 << 20)
    sent: list[int] = []
    i = 0

    def send_for(seconds: float) -> None:
        nonlocal i
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(20):
                sink.send(*message(i))
                sent.append(i)
                i += 1
            sink.poll()
            time.sleep(0.01)

    with capture_logs() as logs:
        send_for(2.0)
        assert sink.state == "connected"
        own_broker.stop()
        send_for(7.0)
        assert sink.state == "disconnected"
        during_outage = len(sent)
        own_broker.start()
        send_for(2.0)
        sink.flush(60)
        assert sink.state == "connected"
        sink.close(5)

    assert counters["sink.delivered"] == len(sent) == counters["sink.sent"]
    assert not any(k.startswith("sink.dropped") and v for k, v in counters.items()), counters
    assert counters["sink.reconnects"] == 1
    events = [e["event"] for e in logs]
    assert events.count("kafka disconnected") == 1, events  # one line per state change, not per retry
    assert events.count("kafka connected") == 2, events
    down = next(e for e in logs if e["event"] == "kafka disconnected")
    assert down["brokers"] == own_broker.bootstrap and down["reason"]

    assert during_outage > 1000
    assert_exactly(own_broker.consume_all(TOPIC, expect=len(sent)), sent)


def test_tiny_buffer_while_down_drops_oldest_and_counts_them():
    require_tansu()
    port = free_port()  # nothing listens here yet
    counters = Counter()
    n, keep = 500, 40
    per_message = sum(map(len, message(0)))
    sink = KafkaSink(
        settings(f"127.0.0.1:{port}"), counters=counters, max_buffer_bytes=keep * per_message + per_message // 2,
        backoff=(0.1, 0.5),
    )
    for i in range(n):
        sink.send(*message(i))
        sink.poll()
    assert sink.buffered_bytes <= keep * per_message + per_message // 2
    dropped = counters["sink.dropped.buffer_full"]
    assert dropped == n - keep

    with TansuBroker(port=port) as broker:
        sink.flush(30)
        sink.close(5)
        records = broker.consume_all(TOPIC, expect=n - dropped)
    got = sorted(seq(r.value) for r in records)
    assert got == list(range(dropped, n))  # the oldest went, the newest arrived
    assert counters["sink.delivered"] + dropped == n == counters["sink.sent"]


def test_unreachable_at_start_then_broker_appears():
    require_tansu()
    port = free_port()
    counters = Counter()
    sink = KafkaSink(settings(f"127.0.0.1:{port}"), counters=counters, backoff=(0.1, 0.5))
    with capture_logs() as logs:
        deadline = time.monotonic() + 10
        i = 0
        while sink.state != "disconnected" and time.monotonic() < deadline:
            sink.send(*message(i))
            i += 1
            sink.poll()
            time.sleep(0.05)
        assert sink.state == "disconnected"
        for _ in range(20):  # more failed attempts: still one log line
            sink.send(*message(i))
            i += 1
            sink.poll()
            time.sleep(0.05)
        with TansuBroker(port=port) as broker:
            sink.flush(30)
            assert sink.state == "connected"
            sink.close(5)
            records = broker.consume_all(TOPIC, expect=i)
    down = [e for e in logs if e["event"] == "kafka disconnected"]
    assert len(down) == 1
    assert f"127.0.0.1:{port}" in down[0]["reason"] and "refused" in down[0]["reason"].lower()
    assert counters["sink.connect_failures"] >= 2
    assert_exactly(records, list(range(i)))


def test_broker_losing_its_state_is_survived(own_broker):
    """A broker restarted without its data forgets our producer id: the sink starts a new producer."""
    counters = Counter()
    sink = KafkaSink(settings(own_broker.bootstrap, kafka_topic="amnesia"), counters=counters, backoff=(0.1, 0.5))
    for i in range(100):
        sink.send(*message(i))
    sink.flush(30)
    own_broker.hard_restart()
    for i in range(100, 200):
        sink.send(*message(i))
    sink.flush(30)
    sink.close(5)
    assert counters["sink.delivered"] == 200
    assert_exactly(own_broker.consume_all("amnesia", expect=100), list(range(100, 200)))


def test_heartbeat_arrives_as_json(broker):
    counters = Counter()
    hb = HeartbeatSender(settings(broker.bootstrap, heartbeat_topic="hb", daemonset_id="abc"), counters)
    payload = {"daemonset_id": "abc", "node": "n1", "version": "0.1", "uptime": 12.5, "counters": {"pairs": 3}}
    hb.send(payload)
    hb.close(10)
    assert counters["heartbeat.delivered"] == 1
    records = broker.consume_all("hb", expect=1)
    assert [orjson.loads(r.value) for r in records] == [payload]
    assert records[0].key == b"abc"


def test_close_delivers_what_is_buffered(broker):
    counters = Counter()
    sink = KafkaSink(settings(broker.bootstrap, kafka_topic="closing"), counters=counters)
    n = 5000
    for i in range(n):
        sink.send(*message(i))  # no poll: everything is still in our queue
    assert sink.buffered_bytes > 0
    sink.close(30)
    assert sink.state == "closed"
    assert counters["sink.delivered"] == n and counters["sink.dropped.shutdown"] == 0
    assert_exactly(broker.consume_all("closing", expect=n), list(range(n)))


def test_close_with_broker_down_counts_the_rest():
    require_tansu()
    counters = Counter()
    sink = KafkaSink(settings(f"127.0.0.1:{free_port()}"), counters=counters)
    for i in range(50):
        sink.send(*message(i))
    sink.poll()
    started = time.monotonic()
    sink.close(1.0)
    assert time.monotonic() - started < 3
    assert counters["sink.dropped.shutdown"] == 50


def _accounted(counters: Counter) -> int:
    return counters["sink.delivered"] + sum(v for k, v in counters.items() if k.startswith("sink.dropped."))


@pytest.mark.parametrize("back_before_close", [True, False])
def test_outage_with_tiny_buffer_counts_every_message_once(own_broker, back_before_close):
    """Messages in the producer when the broker goes away, a buffer small enough
    to evict during the outage, then the broker back (or close while it is away):
    delivered + dropped.* == sent exactly, and nothing counted dropped was stored."""
    topic = f"ledger-{back_before_close}"
    counters = Counter()
    per_message = sum(map(len, message(0)))
    sink = KafkaSink(
        settings(own_broker.bootstrap, kafka_topic=topic), counters=counters,
        max_buffer_bytes=30 * per_message, inflight_bytes=10 * per_message, backoff=(0.1, 0.5), stall_seconds=1.0,
    )
    i = 0

    def send(n: int) -> None:
        nonlocal i
        for _ in range(n):
            sink.send(*message(i))
            i += 1
            sink.poll()
            assert _accounted(counters) + len(sink._pending) + len(sink._inflight) == i

    send(20)
    sink.flush(30)
    assert counters["sink.delivered"] == 20
    own_broker.stop()
    time.sleep(0.5)
    send(200)  # ~10 handed to the producer and stuck there, the rest evicted oldest first
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        sink.poll()
        time.sleep(0.05)
    assert counters["sink.dropped.buffer_full"] > 0
    if back_before_close:
        own_broker.start()
        sink.flush(60)
        assert not sink.buffered_bytes
    sink.close(1.0)
    assert counters["sink.sent"] == i == _accounted(counters)
    if not back_before_close:
        own_broker.start()
    stored = {seq(r.value) for r in own_broker.consume_all(topic, expect=counters["sink.delivered"])}
    # nothing could reach the broker during the outage, so what it holds is exactly what was counted delivered
    assert len(stored) == counters["sink.delivered"]
