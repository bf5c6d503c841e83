"""Where encoded messages go: Kafka when brokers are configured, JSON lines otherwise.

Every sink has the same shape, because the worker loop is single-threaded
and must never stall on its output: ``send()`` only appends to a bounded
in-memory queue, ``poll()`` (called often by the loop) moves data on,
``flush``/``close`` deliver within a time bound and count what is left.
Nothing is dropped without a named counter.

- ``jsonl``: JSON lines on stdout or a file (the default);
- ``kafka``: the Kafka state machine (kafka-python);
- ``kafka_batches``: the batch writer that reaches into kafka-python's
  internals, alone, behind one function;
- ``heartbeat``: the collector's heartbeats, on their own topic.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from akto_collector.sinks.heartbeat import HeartbeatSender
from akto_collector.sinks.jsonl import JsonLinesSink
from akto_collector.sinks.kafka import KafkaSink, parse_brokers, producer_config

__all__ = ["HeartbeatSender", "JsonLinesSink", "KafkaSink", "Sink", "make_sink", "parse_brokers", "producer_config"]


class Sink(Protocol):
    state: str

    def send(self, key: bytes, value: bytes) -> None: ...
    def poll(self) -> None: ...
    def flush(self, timeout: float) -> None: ...
    def close(self, timeout: float) -> None: ...
    @property
    def buffered_bytes(self) -> int: ...
    @property
    def buffered_messages(self) -> int: ...


def make_sink(
    settings: Any,
    output: str = "-",
    counters: Counter | None = None,
    max_buffer_bytes: int | None = None,
) -> Sink:
    """KafkaSink when ``settings.kafka_brokers`` is non-empty, else JsonLinesSink.

    Raises ValueError for a bad broker address or compression name, and
    OSError when the output cannot be opened. Create it in the process that
    uses it: it owns file descriptors, sockets and, for Kafka, threads.
    """
    counters = Counter() if counters is None else counters
    if max_buffer_bytes is None:
        max_buffer_bytes = settings.buffer_threshold_bytes
    if settings.kafka_brokers:
        parse_brokers(settings.kafka_brokers)
        return KafkaSink(settings, counters=counters, max_buffer_bytes=max_buffer_bytes)
    return JsonLinesSink(output, counters=counters, flush_interval=float(settings.kafka_poll_interval))
