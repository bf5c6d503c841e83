"""Heartbeats: one small JSON message per interval on the heartbeat topic, best effort."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson

from akto_collector.sinks.kafka import KafkaSink


class HeartbeatSender:
    """One JSON message per call on ``settings.heartbeat_topic``, best effort.

    The caller (the supervisor) builds the payload and calls ``poll()`` from
    its loop. Every message is keyed by ``settings.daemonset_id``, so one
    collector's heartbeats stay in one partition, in order. Without brokers
    this does nothing. Counters are ``heartbeat.*``.
    """

    def __init__(self, settings: Any, counters: Counter | None = None, max_buffer_bytes: int = 1 << 20):
        self.counters = Counter() if counters is None else counters
        self.interval = float(settings.heartbeat_interval)
        self._key = settings.daemonset_id.encode()
        self._sink: KafkaSink | None = None
        if settings.kafka_brokers:
            self._sink = KafkaSink(
                settings,
                counters=self.counters,
                max_buffer_bytes=max_buffer_bytes,
                topic=settings.heartbeat_topic,
                counter_prefix="heartbeat",
                inflight_bytes=max_buffer_bytes // 2,
            )

    @property
    def state(self) -> str:
        return self._sink.state if self._sink is not None else "disabled"

    def send(self, payload: dict[str, Any]) -> None:
        if self._sink is None:
            return
        self._sink.send(self._key, orjson.dumps(payload, default=str))
        self._sink.poll()

    def poll(self) -> None:
        if self._sink is not None:
            self._sink.poll()

    def close(self, timeout: float) -> None:
        if self._sink is not None:
            self._sink.close(timeout)
