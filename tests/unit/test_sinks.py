"""Sinks without a broker: JSON lines, settings validation, the Kafka sink's bounded queue."""

from __future__ import annotations

import multiprocessing
import os
import socket
import types
from collections import Counter

import pytest

from akto_collector.config import Settings
from akto_collector.sinks import (
    HeartbeatSender,
    JsonLinesSink,
    KafkaSink,
    make_sink,
    parse_brokers,
    producer_config,
)


def settings(**overrides):
    """The collector's own Settings (defaults from its table) with a 1 MB buffer.
    Not validated: the sinks must refuse bad values themselves."""
    base = dict(buffer_threshold_mb=1, node_name="test", workers=1, daemonset_id="ds-test")
    base.update(overrides)
    return Settings(**base)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- JSON lines


def test_json_lines_writes_exact_lines(tmp_path):
    out = tmp_path / "out.jsonl"
    counters = Counter()
    sink = make_sink(settings(), output=str(out), counters=counters)
    assert isinstance(sink, JsonLinesSink)
    values = [b'{"a":"1"}', b'{"b":"\\u00e9"}', b"{}"]
    for v in values:
        sink.send(b"10.0.0.1", v)
    assert out.read_bytes() == b""  # buffered until poll interval or flush
    assert sink.buffered_bytes == sum(len(v) + 1 for v in values)
    sink.flush(1)
    assert out.read_bytes() == b"".join(v + b"\n" for v in values)
    sink.send(b"", b'{"c":"3"}')
    sink.close(1)
    assert out.read_bytes().splitlines() == values + [b'{"c":"3"}']
    assert counters["sink.sent"] == counters["sink.delivered"] == 4
    assert sink.state == "closed"


def test_json_lines_appends_to_existing_file(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"old":"1"}\n')
    sink = JsonLinesSink(str(out))
    sink.send(b"", b'{"new":"2"}')
    sink.close(1)
    assert out.read_bytes() == b'{"old":"1"}\n{"new":"2"}\n'


def test_json_lines_poll_writes_after_interval(tmp_path):
    out = tmp_path / "out.jsonl"
    sink = JsonLinesSink(str(out), flush_interval=0.0)
    sink.send(b"", b"{}")
    sink.poll()
    assert out.read_bytes() == b"{}\n"
    sink.close(0)


def test_json_lines_to_stdout(capfd):
    sink = make_sink(settings(), output="-")
    sink.send(b"k", b'{"x":"1"}')
    sink.close(1)
    assert capfd.readouterr().out == '{"x":"1"}\n'


def _write_lines(fd: int, tag: int, count: int, size: int) -> None:
    os.dup2(fd, 1)  # the sink writes to stdout, like every worker process does
    sink = JsonLinesSink("-", flush_interval=0.0)
    for i in range(count):
        sink.send(b"", (b'{"w":"%d","i":"%d","pad":"' % (tag, i)) + b"x" * size + b'"}')
        if i % 7 == 0:
            sink.poll()
    sink.close(1)


def test_json_lines_from_several_processes_never_interleave():
    """Lines far longer than PIPE_BUF, from 4 processes into one pipe, arrive whole."""
    r, w = os.pipe()
    ctx = multiprocessing.get_context("fork")
    workers, count, size = 4, 60, 20_000
    procs = [ctx.Process(target=_write_lines, args=(w, t, count, size)) for t in range(workers)]
    for p in procs:
        p.start()
    os.close(w)
    chunks = []
    while data := os.read(r, 1 << 16):
        chunks.append(data)
    os.close(r)
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    lines = b"".join(chunks).split(b"\n")
    assert lines[-1] == b""
    lines = lines[:-1]
    assert len(lines) == workers * count, "lines were split or merged"
    seen = Counter()
    for line in lines:
        head, _, rest = line.partition(b'","pad":"')
        assert rest == b"x" * size + b'"}', f"mangled line starting {line[:60]!r}"
        seen[head.split(b'"')[3]] += 1
    assert seen == {str(t).encode(): count for t in range(workers)}


def test_json_lines_counts_write_errors(tmp_path):
    r, w = os.pipe()
    os.close(r)  # nobody reads: EPIPE
    counters = Counter()
    sink = JsonLinesSink("-", counters=counters)
    sink._fd = w  # write into the broken pipe instead of the test's stdout
    sink.send(b"", b"{}")
    sink.send(b"", b"{}")
    sink.flush(0)
    assert counters["sink.dropped.error"] == 2
    assert sink.state == "failed"
    os.close(w)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("good,parsed", [
    (("kafka:9092",), ("kafka:9092",)),
    (("10.0.0.1:9092", " b:19092 "), ("10.0.0.1:9092", "b:19092")),
    ("a:1, b:2", ("a:1", "b:2")),
    (("[::1]:9092",), ("[::1]:9092",)),
    ((), ()),
    ("", ()),
])
def test_parse_brokers_accepts(good, parsed):
    assert parse_brokers(good) == parsed


@pytest.mark.parametrize("bad", ["kafka", "kafka:", ":9092", "kafka:port", "kafka:0", "kafka:70000", "ka fka:9092"])
def test_bad_broker_strings_are_refused_clearly(bad):
    with pytest.raises(ValueError, match="AKTO_KAFKA_BROKER_MAL.*" + bad.replace(" ", "\\s")):
        make_sink(settings(kafka_brokers=(bad,)))


def test_bad_compression_is_refused():
    with pytest.raises(ValueError, match="AKTO_KAFKA_COMPRESSION"):
        make_sink(settings(kafka_brokers=("k:9092",), kafka_compression="brotli"))


def test_producer_config_security():
    plain = producer_config(settings(kafka_brokers=("k:9092",)))
    assert plain["acks"] == "all" and plain["max_in_flight_requests_per_connection"] == 1
    assert plain["compression_type"] == "lz4" and plain["linger_ms"] == 500
    assert "security_protocol" not in plain
    none = producer_config(settings(kafka_brokers=("k:9092",), kafka_compression="none"))
    assert none["compression_type"] is None
    tls = producer_config(settings(kafka_brokers=("k:9093",), kafka_use_tls=True, kafka_ca_file="/ca.pem"))
    assert tls["security_protocol"] == "SSL" and tls["ssl_cafile"] == "/ca.pem"
    sasl = producer_config(settings(kafka_brokers=("k:9092",), kafka_username="u", kafka_password="p"))
    assert sasl["security_protocol"] == "SASL_PLAINTEXT"
    assert (sasl["sasl_mechanism"], sasl["sasl_plain_username"], sasl["sasl_plain_password"]) == ("PLAIN", "u", "p")
    both = producer_config(settings(kafka_brokers=("k:9093",), kafka_username="u", kafka_use_tls=True))
    assert both["security_protocol"] == "SASL_SSL"


# --------------------------------------------------------------------------- Kafka sink without a broker


def test_kafka_sink_sheds_oldest_and_accounts_for_everything():
    counters = Counter()
    sink = make_sink(settings(kafka_brokers=(f"127.0.0.1:{closed_port()}",)), counters=counters, max_buffer_bytes=1000)
    assert isinstance(sink, KafkaSink)
    for i in range(100):
        sink.send(b"k", b"%099d" % i)  # 100 bytes each with the key
    assert sink.buffered_bytes <= 1000
    assert counters["sink.dropped.buffer_full"] == 90
    assert [v for _, v in sink._pending] == [b"%099d" % i for i in range(90, 100)]
    sink.close(0.2)
    assert counters["sink.dropped.shutdown"] == 10
    assert counters["sink.sent"] == 100 == counters["sink.dropped.buffer_full"] + counters["sink.dropped.shutdown"]
    assert sink.state == "closed"


def test_heartbeat_without_brokers_is_a_no_op():
    counters = Counter()
    hb = HeartbeatSender(settings(), counters)
    assert hb.state == "disabled"
    hb.send({"daemonset_id": "x"})
    hb.poll()
    hb.close(0)
    assert not counters


# --------------------------------------------------------------------------- Kafka hand-over (fake producer)


class _FakeFuture:
    is_done = False
    exception = None


class _FakeAccumulator:
    def __init__(self):
        self.appended = []
        self.batches: dict = {}

    def append(self, tp, timestamp_ms, key, value, headers, now=None, abort_on_new_batch=False):
        self.appended.append((tp, key, value))
        n = self.batches[tp] = self.batches.get(tp, 0) + 1
        return _FakeFuture(), n % 3 == 0, n == 1, False  # full every 3rd, new on the first


class _FakeProducer:
    """What KafkaSink._hand_over uses of a kafka-python 3.0 KafkaProducer."""

    def __init__(self, partitions=(0, 1, 2, 3), fail_on=None):
        self.partitions = set(partitions)
        self.sent = []
        self.fail_on = fail_on
        self._accumulator = _FakeAccumulator()
        self._sender = types.SimpleNamespace(wakeups=0)
        self._sender.wakeup = lambda: setattr(self._sender, "wakeups", self._sender.wakeups + 1)
        self._transaction_manager = None

    def partitions_for(self, topic):
        return set(self.partitions)

    def send(self, topic, value=None, key=None, partition=None):
        from kafka import errors

        if self.fail_on is not None and value == self.fail_on:
            raise errors.IllegalStateError("producer closed")
        if len(value) > 1000:
            raise errors.MessageSizeTooLargeError("too large")
        self.sent.append((partition, key, value))
        return _FakeFuture()

    def close(self, timeout=None):
        pass


def _connected_sink(producer, **kwargs):
    sink = KafkaSink(
        settings(kafka_brokers=(f"127.0.0.1:{closed_port()}",), kafka_topic="t"), max_buffer_bytes=1 << 20, **kwargs
    )
    sink._producer = producer
    sink._connect_thread = None
    sink.state = "connected"
    return sink


def test_partition_cache_matches_kafka_python_default_partitioner():
    from kafka.partitioner.default import DefaultPartitioner

    keys = [b"10.0.%d.%d" % (i % 7, i) for i in range(300)] + [b"x", b"::1", b"127.0.0.1"]
    for n in (1, 2, 3, 4, 7, 12):
        producer = _FakeProducer(partitions=range(n))
        sink = _connected_sink(producer)
        for key in keys:
            sink.send(key, b"v")
        sink.poll()
        cluster = types.SimpleNamespace(
            topics=lambda: {"t"}, partitions_for_topic=lambda t: set(range(n)),
            available_partitions_for_topic=lambda t: set(range(n)),
        )
        want = [DefaultPartitioner().partition("t", k, k, b"v", b"v", cluster) for k in keys]
        got = [tp.partition for tp, _k, _v in producer._accumulator.appended]
        assert got == want, n
        assert all(tp.topic == "t" for tp, _k, _v in producer._accumulator.appended)


def test_partition_cache_follows_a_partition_count_change():
    producer = _FakeProducer(partitions=range(2))
    sink = _connected_sink(producer)
    sink.send(b"10.0.0.9", b"v")
    sink.poll()
    producer.partitions = set(range(5))
    sink.send(b"10.0.0.9", b"v")
    sink.poll()
    assert sink._partitions == [0, 1, 2, 3, 4]
    assert set(sink._partition_of) == {b"10.0.0.9"}
    assert sink._partition_of[b"10.0.0.9"].partition in range(5)


def test_hand_over_fast_path_and_send_fallbacks():
    producer = _FakeProducer()
    counters = Counter()
    sink = _connected_sink(producer, counters=counters)
    sink._fast_limit = 500  # larger messages go through send(), which checks the size
    sink.send(b"10.0.0.1", b"a" * 10)  # keyed, small: accumulator
    sink.send(b"", b"b" * 10)  # no key: send() lets kafka-python pick the partition
    sink.send(b"10.0.0.1", b"c" * 600)  # above the fast limit: send() with our partition
    sink.send(b"10.0.0.1", b"d" * 2000)  # refused by send(): counted, not retried
    sink.send(b"10.0.0.2", b"e" * 10)
    sink.poll()
    assert [v[:1] for _tp, _k, v in producer._accumulator.appended] == [b"a", b"e"]
    assert [(p is None, k, v[:1]) for p, k, v in producer.sent] == [(True, None, b"b"), (False, b"10.0.0.1", b"c")]
    assert producer.sent[1][0] == sink._partition_of[b"10.0.0.1"].partition
    # a new batch wakes the sender: at once for the first, at the end of the hand-over for the rest
    assert producer._sender.wakeups == len({tp for tp, _k, _v in producer._accumulator.appended})
    assert counters["sink.dropped.error"] == 1
    assert [v[:1] for _f, _k, v, _t in sink._inflight] == [b"a", b"b", b"c", b"e"]
    assert sink._pending_bytes == 0
    assert sink._inflight_bytes == sum(len(k) + len(v) for _f, k, v, _t in sink._inflight)


def test_hand_over_failure_requeues_in_order_with_exact_bytes():
    producer = _FakeProducer(fail_on=b"x" * 11)
    counters = Counter()
    sink = _connected_sink(producer, counters=counters)
    sink._append = False  # send() for everything, as with a kafka-python without the expected internals
    values = [b"v" * 10, b"w" * 10, b"x" * 11, b"y" * 10]
    for v in values:
        sink.send(b"k", v)
    sink.poll()
    assert sink._producer is None and sink.state == "disconnected"
    assert [v for _k, v in sink._pending] == values  # the two handed over came back in front
    assert sink._pending_bytes == sum(1 + len(v) for v in values)
    assert sink._inflight_bytes == 0 and not sink._inflight
    assert counters["sink.retried"] == 2
    sink.close(0)


def test_fast_append_only_for_the_expected_internals():
    from akto_collector.sinks.kafka_batches import fast_append as _fast_append

    assert _fast_append(object()) is None
    old = _FakeProducer()
    old._accumulator.append = lambda tp, timestamp_ms, key, value, headers, max_time_to_block_ms, estimated_size=0: None
    assert _fast_append(old) is None  # kafka-python 2.x signature
    transactional = _FakeProducer()
    transactional._transaction_manager = types.SimpleNamespace(is_transactional=lambda: True)
    assert _fast_append(transactional) is None
    producer = _FakeProducer()
    assert _fast_append(producer) == (producer._accumulator.append, producer._sender.wakeup, None)


def test_hand_over_wakes_the_sender_for_the_first_ready_batch_then_sparingly():
    from akto_collector.sinks.kafka_batches import WAKEUP_EVERY as _WAKEUP_EVERY

    producer = _FakeProducer(partitions=[0])
    sink = _connected_sink(producer)
    n = 10 * _WAKEUP_EVERY
    for i in range(n):
        sink.send(b"k", b"%d" % i)
    sink.poll()
    assert len(producer._accumulator.appended) == n
    # every 3rd append reports a full batch (as kafka-python does while one waits)
    assert 2 <= producer._sender.wakeups <= n // _WAKEUP_EVERY + 2
    sink.send(b"k", b"one more")  # wakes the sender only if the fake calls its batch full
    before = producer._sender.wakeups
    sink.poll()
    assert producer._sender.wakeups == before + (len(producer._accumulator.appended) % 3 == 0)


# --------------------------------------------------------------------------- Kafka accounting
#
# Every message given to KafkaSink.send() ends up counted exactly once, in
# sink.delivered or in one sink.dropped.* counter, or is still buffered.


def _accounted(counters, sink, prefix="sink"):
    """delivered + every dropped.* + what is still buffered: must equal sent."""
    settled = counters[f"{prefix}.delivered"] + sum(
        v for k, v in counters.items() if k.startswith(f"{prefix}.dropped.")
    )
    return settled + len(sink._pending) + len(sink._inflight)


class _Future:
    __slots__ = ("is_done", "exception", "value")

    def __init__(self, value=None):
        self.is_done, self.exception, self.value = False, None, value


class _ScriptedProducer:
    """A producer whose futures the test resolves; close() resolves the rest like kafka-python.

    ``on_close`` decides each unresolved future's fate when the producer is
    closed (an acknowledgement that arrives meanwhile, or the abort).
    """

    def __init__(self, on_close=None, fail_send=None):
        from kafka import errors

        self.futures: list[_Future] = []
        self.stored: list[bytes] = []
        self.closed = False
        self.fail_send = fail_send
        self.on_close = on_close or (lambda f: errors.IllegalStateError("Producer is closed forcefully."))
        self._transaction_manager = None

    def partitions_for(self, topic):
        return {0}

    def send(self, topic, value=None, key=None, partition=None):
        if self.fail_send is not None:
            raise self.fail_send
        future = _Future(value)
        self.futures.append(future)
        return future

    def ack(self, future):
        future.is_done = True
        self.stored.append(future.value)

    def fail(self, future, exc):
        future.exception = exc
        future.is_done = True

    def close(self, timeout=None):
        self.closed = True
        for future in self.futures:
            if not future.is_done:
                outcome = self.on_close(future)
                if outcome is None:
                    self.ack(future)
                else:
                    self.fail(future, outcome)


def _sink_with(producer, counters, max_buffer_bytes=1 << 20, inflight_bytes=4 << 20):
    sink = KafkaSink(
        settings(kafka_brokers=(f"127.0.0.1:{closed_port()}",), kafka_topic="t"),
        counters=counters, max_buffer_bytes=max_buffer_bytes, inflight_bytes=inflight_bytes,
    )
    sink._producer = producer
    sink._append = False  # producer.send() for everything
    sink._connect_thread = None
    sink.state = "connected"
    return sink


def test_close_counts_an_ack_arriving_while_the_producer_closes_as_delivered():
    """close() used to settle in-flight futures before closing the producer:
    one acknowledged during the close was counted dropped.shutdown, yet stored."""
    producer = _ScriptedProducer(on_close=lambda f: None)  # the broker's answer arrives while closing
    counters = Counter()
    sink = _sink_with(producer, counters)
    for i in range(3):
        sink.send(b"k", b"m%d" % i)
    sink.poll()
    assert len(sink._inflight) == 3
    producer.ack(producer.futures[0])
    sink.close(0)
    assert len(producer.stored) == 3
    assert counters["sink.delivered"] == 3 and counters["sink.dropped.shutdown"] == 0
    assert counters["sink.sent"] == _accounted(counters, sink) == 3


def test_close_settles_in_flight_messages_by_their_outcome():
    from kafka import errors

    producer = _ScriptedProducer()  # close() aborts what is unresolved
    counters = Counter()
    sink = _sink_with(producer, counters)
    for i in range(4):
        sink.send(b"k", b"m%d" % i)
    sink.poll()
    producer.fail(producer.futures[1], errors.InvalidRecordError("bad"))  # refused: an error, not a shutdown drop
    producer.ack(producer.futures[2])  # acknowledged behind an unresolved head
    sink.send(b"k", b"still queued")
    sink._hand_over = lambda now: None  # keep the last one in our queue
    sink.close(0)
    assert counters["sink.delivered"] == 1
    assert counters["sink.dropped.error"] == 1
    assert counters["sink.dropped.shutdown"] == 3  # futures 0 and 3, and the queued one
    assert counters["sink.sent"] == _accounted(counters, sink) == 5
    assert not sink._pending and not sink._inflight and sink.buffered_bytes == 0


def test_send_after_close_is_counted_as_dropped():
    counters = Counter()
    sink = _sink_with(_ScriptedProducer(), counters)
    sink.close(0)
    sink.send(b"k", b"late")
    sink.poll()
    assert counters["sink.sent"] == counters["sink.dropped.shutdown"] == 1
    assert not sink._pending and sink.buffered_bytes == 0


def test_message_larger_than_the_whole_buffer_is_dropped_alone():
    counters = Counter()
    sink = make_sink(settings(kafka_brokers=(f"127.0.0.1:{closed_port()}",)), counters=counters, max_buffer_bytes=1000)
    for i in range(5):
        sink.send(b"k", b"%099d" % i)
    sink.send(b"k", b"x" * 1000)  # 1001 bytes with its key: can never fit
    assert counters["sink.dropped.buffer_full"] == 1
    assert [v for _, v in sink._pending] == [b"%099d" % i for i in range(5)]  # nothing older evicted for it
    sink.send(b"k", b"y" * 599)  # fits once the oldest goes: drop-oldest as usual
    assert counters["sink.dropped.buffer_full"] == 2
    assert sink.buffered_bytes == 1000
    sink.close(0)
    assert counters["sink.sent"] == 7 == _accounted(counters, sink)


def test_failed_future_requeued_then_evicted_is_counted_once():
    """A message whose delivery timed out goes back to the queue; evicted there,
    it counts once as buffer_full, and its old future is never looked at again."""
    from kafka import errors

    producer = _ScriptedProducer()
    counters = Counter()
    sink = _sink_with(producer, counters, max_buffer_bytes=300, inflight_bytes=150)
    sink.send(b"k", b"a" * 99)
    sink.poll()
    old = producer.futures[0]
    producer.fail(old, errors.KafkaTimeoutError("expired in the producer"))  # retriable: same producer
    sink._hand_over = lambda now: None  # disconnected: nothing is handed over again
    sink.poll()
    assert counters["sink.retried"] == 1 and [v[:1] for _, v in sink._pending] == [b"a"]
    for c in b"bcd":
        sink.send(b"k", bytes([c]) * 99)  # the re-queued one is the oldest: it goes
    assert counters["sink.dropped.buffer_full"] == 1
    old.exception = None  # even if the old future changed its mind later
    sink.poll()
    assert counters["sink.delivered"] == 0 and counters["sink.dropped.buffer_full"] == 1
    assert counters["sink.sent"] == _accounted(counters, sink) == 4
    sink.close(0)
    assert counters["sink.dropped.shutdown"] == 3
    assert counters["sink.sent"] == _accounted(counters, sink)


def test_producer_reset_settles_in_flight_once_and_requeues_the_rest():
    from kafka import errors

    producer = _ScriptedProducer(on_close=lambda f: None if f.value == b"m2" else errors.IllegalStateError("x"))
    counters = Counter()
    sink = _sink_with(producer, counters)
    for i in range(4):
        sink.send(b"k", b"m%d" % i)
    sink.poll()
    producer.ack(producer.futures[0])
    producer.fail(producer.futures[1], errors.InvalidRecordError("bad"))
    producer.fail_send = errors.IllegalStateError("producer closed under us")
    sink.send(b"k", b"m4")
    sink.poll()  # reaps m0 and m1, then the hand-over of m4 fails: reset
    assert sink._producer is None and producer.closed
    # m2 was acknowledged while the producer closed, m3 aborted: back in front of m4
    assert [v for _, v in sink._pending] == [b"m3", b"m4"]
    assert counters["sink.delivered"] == 2 and counters["sink.dropped.error"] == 1
    assert counters["sink.sent"] == _accounted(counters, sink) == 5
    sink.close(0)
    assert counters["sink.dropped.shutdown"] == 2
    assert counters["sink.sent"] == _accounted(counters, sink)


class _ChaosProducer:
    """Resolves futures at random: acknowledged, timed out, refused, fatal; may fail send()."""

    def __init__(self, rng, stored):
        self.rng, self.stored, self.futures, self.closed = rng, stored, [], False
        self._transaction_manager = None
        if rng.random() < 0.5:  # half of them through the accumulator fast path
            self._accumulator = types.SimpleNamespace(append=self._append)
            self._sender = types.SimpleNamespace(wakeup=lambda: None)

    def _append(self, tp, timestamp_ms, key, value, headers, now=None, abort_on_new_batch=False):
        return self._new(value), self.rng.random() < 0.3, self.rng.random() < 0.3, False

    def _new(self, value):
        from kafka import errors

        if self.closed:
            raise errors.IllegalStateError("closed")
        future = _Future(value)
        self.futures.append(future)
        return future

    def partitions_for(self, topic):
        from kafka import errors

        if self.rng.random() < 0.02:
            raise errors.KafkaTimeoutError("no metadata")
        return {0, 1, 2}

    def send(self, topic, value=None, key=None, partition=None):
        from kafka import errors

        if self.rng.random() < 0.02:
            raise errors.IllegalStateError("fatal")
        if len(value) > 5000:
            raise errors.MessageSizeTooLargeError("too large")
        return self._new(value)

    def _resolve(self, future, exc):
        if not future.is_done:
            if exc is None:
                self.stored.append(future.value)
            future.exception = exc
            future.is_done = True

    def step(self):
        from kafka import errors

        for future in self.futures:
            if self.rng.random() < 0.3:
                r = self.rng.random()
                self._resolve(future, None if r < 0.6 else errors.KafkaTimeoutError("expired") if r < 0.8
                              else errors.InvalidRecordError("bad") if r < 0.85
                              else errors.NotLeaderForPartitionError("moved") if r < 0.95
                              else errors.UnknownError("?"))

    def flush(self, timeout=None):
        self.step()

    def close(self, timeout=None):
        from kafka import errors

        self.closed = True
        for future in self.futures:  # an answer arriving while closing, or the abort
            self._resolve(future, None if self.rng.random() < 0.3 else errors.IllegalStateError("forced"))


@pytest.mark.parametrize("seed", range(30))
def test_every_message_is_counted_exactly_once_through_producer_cycles(seed):
    """Random sends, polls, deliveries, failures and producer replacements
    (seeded, so deterministic): after every step sent == delivered +
    dropped.* + buffered, and a message is counted delivered exactly when
    the (fake) broker stored it."""
    import random

    rng = random.Random(seed)
    counters = Counter()
    stored: list[bytes] = []
    sink = _sink_with(
        None, counters, max_buffer_bytes=rng.choice([2000, 8000, 40000]), inflight_bytes=rng.choice([1000, 4000, 20000])
    )
    sink.state = "connecting"
    sink._append = None

    def connect(now):  # a producer appears now and then, as after a connect thread
        if rng.random() < 0.3:
            sink._producer = _ChaosProducer(rng, stored)
            sink._set_state("connected")

    sink._advance_connect = connect
    sent = 0
    for _ in range(1500):
        r = rng.random()
        if r < 0.5:
            size = rng.choice([10, 100, 500, 1500, 3000, 9000, 50000])
            sink.send(b"k%d" % rng.randrange(5), b"%08d" % sent + b"x" * size)
            sent += 1
        elif r < 0.75:
            sink.poll()
        elif r < 0.95:
            if sink._producer is not None:
                sink._producer.step()
        else:
            sink.flush(0)
        assert counters["sink.sent"] == sent == _accounted(counters, sink)
        assert sink._pending_bytes == sum(len(k) + len(v) for k, v in sink._pending)
        assert sink._inflight_bytes == sum(len(k) + len(v) for _f, k, v, _t in sink._inflight)
    sink.close(0)
    assert counters["sink.sent"] == sent == _accounted(counters, sink)
    assert not sink._pending and not sink._inflight
    assert len(set(stored)) == len(stored) == counters["sink.delivered"]


# -- records written straight into kafka-python's batches (_BatchAppender) ----


def test_batches_written_directly_equal_kafka_pythons_own():
    from akto_collector.sinks.kafka_batches import _same_batch_bytes

    assert _same_batch_bytes()


@pytest.mark.parametrize("attrs", [1, 3])  # gzip, lz4: compressed batches decode to the records written
def test_compressed_batches_written_directly_decode(attrs):
    from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder

    from akto_collector.sinks.kafka_batches import _write_record

    records = MemoryRecordsBuilder(2, attrs, 1 << 20)
    sent = [(b"10.0.0.%d" % i, b"v" * (i * 97)) for i in range(50)]
    for i, (key, value) in enumerate(sent):
        assert _write_record(records, 1_700_000_000_000 + i, key, value) == i
    records.close()
    got = [(bytes(r.key), bytes(r.value)) for batch in MemoryRecords(bytes(records.buffer())) for r in batch]
    assert got == sent


def _accumulator(batch_size=4096):
    from kafka.producer.record_accumulator import RecordAccumulator

    return RecordAccumulator(batch_size=batch_size, compression_attrs=3, linger_ms=100)


def test_batch_appender_fills_batches_in_order_and_opens_new_ones_when_full():
    from kafka.record.memory_records import MemoryRecords
    from kafka.structs import TopicPartition

    from akto_collector.sinks.kafka_batches import _BatchAppender

    acc = _accumulator()
    appender = _BatchAppender.for_accumulator(acc)
    assert appender is not None
    tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)
    sent = {tp0: [], tp1: []}
    flags = []
    for i in range(40):
        tp = tp0 if i % 3 else tp1
        value = b"%d:" % i + b"v" * 300
        handle, full, new, abort = appender.append(tp, None, b"10.0.0.%d" % (i % 3), value, [])
        sent[tp].append(value)
        flags.append((tp, full, new))
        assert not abort
    assert [f for f in flags if f[0] == tp0][0][2]  # the first record of a partition opens its batch
    assert any(full for tp, full, new in flags if tp == tp0)  # 4 KiB batches fill up
    for tp in (tp0, tp1):
        got = []
        for batch in acc._batches[tp]:
            assert batch in acc._incomplete.all()
            batch.records.close()
            for record_batch in MemoryRecords(bytes(batch.records.buffer())):
                got.extend(bytes(r.value) for r in record_batch)
        assert got == sent[tp]


def test_batch_appender_outcomes_come_from_the_batch():
    from kafka import errors
    from kafka.structs import TopicPartition

    from akto_collector.sinks.kafka_batches import _BatchAppender

    acc = _accumulator(batch_size=1 << 20)
    appender = _BatchAppender.for_accumulator(acc)
    tp = TopicPartition("t", 0)
    def drain():  # as the sender thread does before sending
        batch = acc._batches[tp].popleft()
        batch.records.close()
        return batch

    handles = [appender.append(tp, None, b"k", b"v%d" % i, [])[0] for i in range(3)]
    batch = drain()
    assert not any(h.is_done for h in handles)
    batch.complete(0, -1)
    assert all(h.is_done and h.exception is None for h in handles)

    handles = [appender.append(tp, None, b"k", b"w%d" % i, [])[0] for i in range(3)]
    batch = drain()
    refused = errors.InvalidRecordError("bad record")
    batch.complete_exceptionally(errors.KafkaTimeoutError("expired"),
                                 lambda i: refused if i == 1 else errors.KafkaTimeoutError("expired"))
    assert isinstance(handles[0].exception, errors.KafkaTimeoutError)
    assert handles[1].exception is refused


def test_batch_appender_refuses_unexpected_internals():
    from akto_collector.sinks.kafka_batches import _BatchAppender

    assert _BatchAppender.for_accumulator(types.SimpleNamespace()) is None
    acc = _accumulator()
    acc.config["message_version"] = 1
    assert _BatchAppender.for_accumulator(acc) is None


def test_batch_appender_never_writes_into_a_batch_the_sender_closed():
    from kafka.structs import TopicPartition

    from akto_collector.sinks.kafka_batches import _BatchAppender

    acc = _accumulator(batch_size=1 << 20)
    appender = _BatchAppender.for_accumulator(acc)
    tp = TopicPartition("t", 0)
    appender.append(tp, None, b"k", b"a", [])
    acc._batches[tp][0].records.close()  # drained and closed, not yet removed
    _handle, full, new, _ = appender.append(tp, None, b"k", b"b", [])
    assert new and full  # a second batch behind the closed one: the closed one is ready
    assert len(acc._batches[tp]) == 2 and acc._batches[tp][1].records.next_offset() == 1


def test_batch_appender_records_follow_a_batch_kafka_python_splits():
    # A broker that finds a batch too large makes kafka-python split it in
    # two and send the halves; each record's outcome must follow its half.
    from kafka import errors
    from kafka.structs import TopicPartition

    from akto_collector.sinks.kafka_batches import _BatchAppender

    acc = _accumulator(batch_size=1 << 20)
    appender = _BatchAppender.for_accumulator(acc)
    tp = TopicPartition("t", 0)
    handles = [appender.append(tp, None, b"k", b"v%d" % i, [])[0] for i in range(5)]
    batch = acc._batches[tp].popleft()
    batch.records.close()
    assert acc.split_and_reenqueue(batch) == 2
    first, second = acc._batches[tp].popleft(), acc._batches[tp].popleft()
    for half in (first, second):
        half.records.close()
    first.complete(0, -1)
    second.complete_exceptionally(errors.KafkaTimeoutError("expired"), lambda i: errors.KafkaTimeoutError("x"))
    assert [h.is_done for h in handles] == [True] * 5
    assert [h.exception is None for h in handles] == [True, True, True, False, False]


def test_batches_are_sized_so_every_partition_can_fill_one_within_the_inflight_cap():
    # A batch goes early only when full; otherwise it waits out the linger.
    # With the hand-over stopped at the in-flight cap, batches too large for
    # cap / partitions would all wait.
    from akto_collector.sinks.kafka_batches import _BatchAppender

    for n, expect in ((1, (1 << 20) - (64 << 10)), (12, (1 << 20) - (64 << 10)), (40, (16 << 20) // 41), (400, 64 << 10)):
        producer = _FakeProducer(partitions=range(n))
        producer._accumulator = _accumulator(batch_size=(1 << 20) - (64 << 10))
        sink = _connected_sink(producer)
        sink._max_bytes = 1 << 30
        sink._inflight_cap = 16 << 20
        sink.send(b"10.0.0.1", b"v")
        sink.poll()
        appender = sink._append[2]
        assert type(appender) is _BatchAppender
        assert appender.batch_size == expect, n
        sink.close(0)
