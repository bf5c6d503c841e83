"""Kafka: bounded, ordered, at-least-once delivery to one topic (kafka-python).

Strategy. The worker loop is single-threaded and must never stall on the
broker: ``send()`` only appends to a bounded in-memory queue, and ``poll()``
(called often by the loop) moves data on. The sink keeps its own queue in
front of kafka-python's producer because the producer's buffer is unbounded
in memory and its ``send()`` can block: we hand the producer at most
``inflight_bytes`` at a time and learn the outcome of each message by
polling its future (never in a callback, so counters are only ever touched
by the worker thread). A message is delivered, put back to be sent again, or
counted under a named drop reason; nothing disappears silently. Records go
into kafka-python's batches through ``kafka_batches.fast_append`` where its
internals are as expected, else through ``producer.send()``.

The sinks package is the only one that imports kafka.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter, deque
from typing import Any

import structlog

from akto_collector.addresses import parse_host_port_list, split_host_port
from akto_collector.config import KAFKA_COMPRESSIONS
from akto_collector.sinks import kafka_batches

log = structlog.get_logger()

DEFAULT_BUFFER_BYTES = 64 << 20


class _KafkaLogCapture(logging.Handler):
    """Keeps kafka-python's latest warning instead of printing it.

    kafka-python logs an error line per failed connection attempt and per
    retried request, which during an outage means a line every few
    milliseconds. We log each state change once ourselves and quote the
    library's latest message as the detail.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.last = record.getMessage()
        except Exception:  # a bad format string in the library must not break delivery
            self.last = str(record.msg)


def _kafka_log_capture() -> _KafkaLogCapture:
    logger = logging.getLogger("kafka")
    for handler in logger.handlers:
        if isinstance(handler, _KafkaLogCapture):
            return handler
    handler = _KafkaLogCapture()
    logger.addHandler(handler)
    logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
    return handler


def _probe(brokers: list[str], timeout: float = 3.0) -> None:
    """Raise ConnectionError unless one broker accepts a TCP connection.

    KafkaProducer only gives up after its bootstrap timeout with "unable
    to bootstrap"; this says at once, and why ("connection refused",
    "name does not resolve"), which is what the operator needs in the log.
    """
    errors = []
    for broker in brokers:
        host, port = split_host_port(broker)
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
            return
        except OSError as exc:
            errors.append(f"{broker}: {exc.strerror or exc}")
    raise ConnectionError("; ".join(errors))


def _describe(exc: BaseException) -> str:
    text, name = str(exc), type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def _message_rejected(exc: BaseException) -> bool:
    """True when the broker refused the message itself: sending it again cannot help."""
    from kafka import errors

    return isinstance(
        exc,
        (
            errors.MessageSizeTooLargeError,
            errors.RecordListTooLargeError,
            errors.InvalidRecordError,
            errors.CorruptRecordError,
            errors.InvalidTopicError,
            errors.TopicAuthorizationFailedError,
        ),
    )


def _retriable(exc: BaseException) -> bool:
    """True for failures the same producer may recover from (timeouts, connections)."""
    from kafka import errors

    return isinstance(exc, (errors.RetriableError, errors.KafkaTimeoutError))


def _close_producer(producer: Any, timeout: float) -> None:
    """Close a KafkaProducer without ever raising.

    kafka-python 3.0's close() raises KafkaTimeoutError from its internal
    flush when batches are still pending, before it stops its sender
    thread; the thread would then keep retrying forever in the background
    (and __del__/atexit would raise again). Force the sender closed in that case.
    """
    try:
        producer.close(timeout=timeout)
        return
    except Exception:
        pass
    sender = getattr(producer, "_sender", None)
    try:
        if sender is not None:
            sender.force_close()
            sender.join(1.0)
    except Exception:
        pass
    try:
        producer.close(timeout=0)
    except Exception:
        producer._closed = True  # stop __del__ from raising at interpreter exit


def parse_brokers(brokers: Any) -> tuple[str, ...]:
    """Validated "host:port" strings (a comma-separated string is accepted too);
    ValueError names the variable and the bad entry."""
    try:
        return parse_host_port_list(brokers or ())
    except ValueError as exc:
        raise ValueError(f"AKTO_KAFKA_BROKER_MAL: {brokers!r}: {exc}") from None


def producer_config(settings: Any, idempotence: bool = True) -> dict[str, Any]:
    """KafkaProducer keyword arguments built from settings (exposed for docs and tests)."""
    brokers = parse_brokers(settings.kafka_brokers)
    compression = str(settings.kafka_compression or "none").lower()
    if compression not in KAFKA_COMPRESSIONS:
        raise ValueError(f"AKTO_KAFKA_COMPRESSION: {compression!r} is not one of {', '.join(KAFKA_COMPRESSIONS)}")
    if compression != "none":
        from kafka import codec

        if not getattr(codec, f"has_{compression}")():
            raise ValueError(f"AKTO_KAFKA_COMPRESSION: {compression} needs its Python library, which is not installed")
    linger_ms = max(0, int(float(settings.kafka_poll_interval) * 1000))
    request_timeout_ms = 30_000
    config: dict[str, Any] = {
        "bootstrap_servers": list(brokers),
        "client_id": "akto-collector",
        "acks": "all",
        "compression_type": None if compression == "none" else compression,
        "linger_ms": linger_ms,
        "batch_size": (1 << 20) - (64 << 10),
        "max_request_size": 1 << 20,
        # One request in flight per connection keeps per-partition order
        # even across retries, idempotent or not.
        "max_in_flight_requests_per_connection": 1,
        "enable_idempotence": idempotence,
        "request_timeout_ms": request_timeout_ms,
        # Batches stay inside the producer (bounded by our inflight_bytes)
        # and are retried through an outage of this length; beyond it they
        # come back to us and are queued again.
        "delivery_timeout_ms": max(300_000, linger_ms + request_timeout_ms),
        "reconnect_backoff_ms": 100,
        "reconnect_backoff_max_ms": 5_000,
        # Bound the blocking calls that run in our connect thread.
        "bootstrap_timeout_ms": 10_000,
        "max_block_ms": 10_000,
        "metrics_enabled": False,
    }
    username = settings.kafka_username
    tls = bool(settings.kafka_use_tls)
    if username:
        config["security_protocol"] = "SASL_SSL" if tls else "SASL_PLAINTEXT"
        config["sasl_mechanism"] = "PLAIN"
        config["sasl_plain_username"] = username
        config["sasl_plain_password"] = settings.kafka_password
    elif tls:
        config["security_protocol"] = "SSL"
    ca_file = settings.kafka_ca_file
    if tls and ca_file:
        config["ssl_cafile"] = ca_file
    return config


class KafkaSink:
    """Bounded, ordered, at-least-once delivery to one Kafka topic.

    States: "connecting" (no producer yet), "connected", "disconnected"
    (the producer could not be created, or nothing was acknowledged for
    ``stall_seconds``), "closed". Each change is logged once.

    Accounting invariant: every message given to send() is counted once in
    ``sent`` and, from then on, is in exactly one of three places: still
    buffered (``_pending`` or ``_inflight``), counted once in ``delivered``,
    or counted once in one ``dropped.*`` counter (``buffer_full``,
    ``error``, ``shutdown``). So at any moment

        sent == delivered + dropped.buffer_full + dropped.error
                + dropped.shutdown + len(_pending) + len(_inflight)

    and after close() nothing is buffered. A message leaves ``_inflight``
    only by being counted or by going back to ``_pending`` (``retried``
    counts moves, not messages); a future is looked at only while its
    message is in ``_inflight``, so it can never be counted twice. Before
    in-flight messages are settled (reset, close) their producer is closed
    first, so that an acknowledgement arriving meanwhile counts as
    delivered, not dropped. What the sink cannot know: a request the broker
    stored but whose answer was lost is sent again (at least once).
    """

    def __init__(
        self,
        settings: Any,
        counters: Counter | None = None,
        max_buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        topic: str | None = None,
        counter_prefix: str = "sink",
        inflight_bytes: int = 16 << 20,
        backoff: tuple[float, float] = (0.5, 30.0),
        stall_seconds: float | None = None,
    ):
        self.counters = Counter() if counters is None else counters
        self.topic = topic or settings.kafka_topic
        self._config = producer_config(settings)  # validates before anything starts
        self._brokers = ",".join(self._config["bootstrap_servers"])
        self._max_bytes = max(1, int(max_buffer_bytes))
        # Keep at least half the budget for the queue we can shed from.
        self._inflight_cap = max(1, min(int(inflight_bytes), self._max_bytes // 2))
        self._backoff_min, self._backoff_max = backoff
        linger = self._config["linger_ms"] / 1000
        self._stall_seconds = stall_seconds if stall_seconds is not None else linger + 5.0

        p = counter_prefix
        self._c_sent = f"{p}.sent"
        self._c_delivered = f"{p}.delivered"
        self._c_buffer_full = f"{p}.dropped.buffer_full"
        self._c_shutdown = f"{p}.dropped.shutdown"
        self._c_error = f"{p}.dropped.error"
        self._c_retried = f"{p}.retried"
        self._c_reconnects = f"{p}.reconnects"
        self._c_connect_failures = f"{p}.connect_failures"

        self._pending: deque[tuple[bytes, bytes]] = deque()  # not yet handed to the producer
        self._pending_bytes = 0
        self._inflight: deque[tuple[Any, bytes, bytes, float]] = deque()  # (future, key, value, handed at)
        self._inflight_bytes = 0
        self._last_ack = 0.0  # monotonic time of the latest acknowledgement
        self._partitions: list[int] = []  # the topic's partitions, sorted
        self._tps: list[Any] = []  # their TopicPartitions
        self._partition_of: dict[bytes, Any] = {}  # key -> TopicPartition (see _partition_for)
        self._append: Any = None  # per producer: kafka_batches.fast_append(producer), or False
        self._sized_for = -1  # the partition count the appender's batch size was set for
        # Larger messages go through producer.send(), which checks max_request_size.
        self._fast_limit = self._config["max_request_size"] - 1024
        # AKTO_KAFKA_BATCH_WRITER=false: only kafka-python's public send().
        self._batch_writer = bool(settings.kafka_batch_writer)

        self._producer: Any = None
        self._idempotence = True
        self._connect_thread: threading.Thread | None = None
        self._connect_result: tuple[Any, BaseException | None] | None = None
        self._connect_lock = threading.Lock()  # orders close() against a producer arriving
        self._next_attempt = 0.0
        self._backoff = self._backoff_min
        self._closed = False
        self._rejections_logged: set[str] = set()
        self._capture = _kafka_log_capture()
        self.state = "connecting"
        self.reason = ""

    # -- the worker-facing interface

    @property
    def buffered_bytes(self) -> int:
        return self._pending_bytes + self._inflight_bytes

    @property
    def buffered_messages(self) -> int:
        return len(self._pending) + len(self._inflight)

    def send(self, key: bytes, value: bytes) -> None:
        """Queue one message; never blocks, never raises on broker trouble."""
        self._pending.append((key, value))
        self._pending_bytes += len(key) + len(value)
        self.counters[self._c_sent] += 1
        if self._pending_bytes + self._inflight_bytes > self._max_bytes:
            self._shed()

    def poll(self) -> None:
        """Connect (in the background), reap finished deliveries, hand over more."""
        if self._closed:
            return
        now = time.monotonic()
        if self._producer is None:
            self._advance_connect(now)
            if self._producer is None:
                return
        self._reap(now)
        if self._producer is not None:
            self._hand_over(now)
            self._check_stall(now)

    def flush(self, timeout: float) -> None:
        """Deliver what is buffered, waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + max(0.0, timeout)
        while (self._pending or self._inflight) and not self._closed:
            self.poll()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._producer is not None and self._inflight:
                try:
                    self._producer.flush(timeout=min(remaining, 0.2))
                except Exception:
                    pass  # KafkaTimeoutError: keep looping until our deadline
            else:
                thread = self._connect_thread
                if thread is not None:
                    thread.join(min(remaining, 0.05))
                else:
                    time.sleep(min(remaining, 0.01))
        self.poll()

    def close(self, timeout: float) -> None:
        """Flush within ``timeout``, count the rest as ``dropped.shutdown``, release."""
        if self._closed:
            return
        self.flush(timeout)
        with self._connect_lock:
            self._closed = True
            late = self._connect_result
            self._connect_result = None
        if late is not None and late[0] is not None:
            _close_producer(late[0], 0)
        # Close the producer before settling its futures: closing resolves
        # each of them (acknowledged meanwhile, or aborted), and one that was
        # acknowledged must count as delivered, not as a shutdown drop.
        producer, self._producer = self._producer, None
        self._append = None
        if producer is not None:
            _close_producer(producer, 0)
        lost = len(self._pending) + len(self._settle_inflight())
        if lost:
            self.counters[self._c_shutdown] += lost
            log.warning("kafka sink closed with undelivered messages", topic=self.topic, dropped=lost)
        self._pending.clear()
        self._pending_bytes = 0
        self.send = self._send_after_close  # type: ignore[method-assign]  # send() itself stays check-free
        self.state = "closed"

    def _send_after_close(self, key: bytes, value: bytes) -> None:
        """send() once closed: nothing would ever take the message, so count it dropped now."""
        self.counters[self._c_sent] += 1
        self.counters[self._c_shutdown] += 1

    # -- internals

    def _shed(self) -> None:
        """Drop the oldest queued messages until the buffer fits again.

        A message larger than the whole buffer could never be kept: it is
        dropped alone instead of first evicting everything older.
        """
        dropped = 0
        pending = self._pending
        key, value = pending[-1]
        if len(key) + len(value) > self._max_bytes:
            pending.pop()
            self._pending_bytes -= len(key) + len(value)
            dropped = 1
        while pending and self._pending_bytes + self._inflight_bytes > self._max_bytes:
            key, value = pending.popleft()
            self._pending_bytes -= len(key) + len(value)
            dropped += 1
        self.counters[self._c_buffer_full] += dropped

    def _advance_connect(self, now: float) -> None:
        thread = self._connect_thread
        if thread is not None:
            if thread.is_alive():
                return
            self._connect_thread = None
            producer, exc = self._connect_result or (None, RuntimeError("connect thread ended without a result"))
            self._connect_result = None
            if producer is not None:
                self._producer = producer
                self._backoff = self._backoff_min
                self._set_state("connected")
                return
            self.counters[self._c_connect_failures] += 1
            self._next_attempt = now + self._backoff
            self._backoff = min(self._backoff * 2, self._backoff_max)
            self._set_state("disconnected", _describe(exc), retry_in=round(self._next_attempt - now, 1))
            return
        if now >= self._next_attempt:
            self._connect_result = None
            self._connect_thread = threading.Thread(
                target=self._connect, args=(dict(self._config, enable_idempotence=self._idempotence),),
                name="akto-kafka-connect", daemon=True,
            )
            self._connect_thread.start()

    def _connect(self, config: dict[str, Any]) -> None:
        """Runs in a thread: creating a producer blocks until the broker answers."""
        from kafka import KafkaProducer

        producer = None
        try:
            _probe(config["bootstrap_servers"])
            producer = KafkaProducer(**config)
            # Fetch the topic's partitions now, so that send() later never
            # blocks the worker loop waiting for metadata.
            producer.partitions_for(self.topic)
            with self._connect_lock:
                if self._closed:
                    raise RuntimeError("sink closed while connecting")
                self._connect_result = (producer, None)
        except Exception as exc:
            if producer is not None:
                _close_producer(producer, 0)
            self._connect_result = (None, exc)

    def _reap(self, now: float) -> None:
        inflight = self._inflight
        delivered = 0
        retry: list[tuple[bytes, bytes]] = []
        broken: BaseException | None = None
        while inflight and inflight[0][0].is_done:
            future, key, value, _t = inflight.popleft()
            self._inflight_bytes -= len(key) + len(value)
            exc = future.exception
            if exc is None:
                delivered += 1
            elif _message_rejected(exc):
                self._reject(exc)
            else:
                retry.append((key, value))
                if not _retriable(exc):
                    broken = exc
        if delivered:
            self.counters[self._c_delivered] += delivered
            self._last_ack = now
            if self.state != "connected":
                self._set_state("connected")
        if broken is not None:
            self._reset_producer(broken, earlier=retry)
        elif retry:
            self._requeue(retry)

    def _hand_over(self, now: float) -> None:
        from kafka import errors

        producer, topic, pending, inflight = self._producer, self.topic, self._pending, self._inflight
        cap = self._inflight_cap
        if not pending or self._inflight_bytes >= cap:
            return
        try:
            # Blocks (as send() would) only while the topic has no metadata.
            partition_of = self._partitions_of(producer.partitions_for(topic))
        except Exception as exc:  # metadata unavailable, producer closed under us
            self._reset_producer(exc)
            return
        if self._append is None:
            self._append = (self._batch_writer and kafka_batches.fast_append(producer)) or False
            self._sized_for = -1
        fast, wakeup, appender = self._append or (None, None, None)
        if appender is not None and self._sized_for != len(self._tps):
            # A batch is sent early only when full, else after linger; the
            # hand-over stops at the in-flight cap. Batches small enough that
            # every partition's open batch fills within the cap keep the
            # sender busy instead of waiting out the linger.
            self._sized_for = len(self._tps)
            appender.batch_size = max(64 << 10, min(self._config["batch_size"],
                                                    self._inflight_cap // (len(self._tps) + 1)))
        ts_ms = int(time.time() * 1000)  # one record time per hand-over, as one clock read
        send, popleft, push = producer.send, pending.popleft, inflight.append
        small = self._fast_limit
        handed = 0
        since_wakeup = kafka_batches.WAKEUP_EVERY  # the first ready batch wakes the sender at once
        ready = False
        while pending and self._inflight_bytes < cap:
            key, value = pending[0]
            size = len(key) + len(value)
            try:
                if not key:
                    future = send(topic, value=value)  # kafka-python picks the partition
                else:
                    tp = partition_of.get(key) or self._partition_for(key)
                    if fast is not None and size <= small:
                        future, batch_is_full, new_batch, _ = fast(tp, ts_ms, key, value, [], now)
                        since_wakeup += 1
                        if batch_is_full or new_batch:
                            ready = True
                            if since_wakeup >= kafka_batches.WAKEUP_EVERY:
                                wakeup()
                                since_wakeup = ready = 0
                    else:
                        future = send(topic, value=value, key=key, partition=tp.partition)
            except errors.MessageSizeTooLargeError as exc:
                popleft()
                self._pending_bytes -= size
                self._reject(exc)
                continue
            except Exception as exc:  # producer in a fatal state or closed under us
                self._pending_bytes -= handed
                self._reset_producer(exc)
                return
            popleft()
            handed += size
            self._inflight_bytes += size
            push((future, key, value, now))
        self._pending_bytes -= handed
        if ready:
            wakeup()

    def _partitions_of(self, partitions: Any) -> dict[bytes, Any]:
        """The key -> TopicPartition cache, emptied when the topic's partitions change."""
        ordered = sorted(partitions)
        if ordered != self._partitions:
            from kafka.structs import TopicPartition

            self._partitions = ordered
            self._tps = [TopicPartition(self.topic, p) for p in ordered]
            self._partition_of = {}
        return self._partition_of

    def _partition_for(self, key: bytes) -> Any:
        """kafka-python's DefaultPartitioner for a key (murmur2, as Java), remembered.

        Keys are client IPs, so there are few distinct ones: murmur2 in pure
        Python (~1.5 us) and the partitioner's set and list building run
        once per key instead of once per message, with the same result.
        """
        from kafka.partitioner.default import murmur2

        tp = self._tps[(murmur2(key) & 0x7FFFFFFF) % len(self._tps)]
        if len(self._partition_of) >= 65536:  # bounded, e.g. during a scan from many source IPs
            self._partition_of.clear()
        self._partition_of[key] = tp
        return tp

    def _check_stall(self, now: float) -> None:
        # Waiting since the oldest hand-over or the latest acknowledgement,
        # whichever is later: right after an outage the head may be old.
        if self.state == "connected" and self._inflight:
            waiting = now - max(self._inflight[0][3], self._last_ack)
            if waiting > self._stall_seconds:
                self._set_state("disconnected", f"no acknowledgement for {waiting:.1f}s")

    def _requeue(self, items: list[tuple[bytes, bytes]]) -> None:
        """Put failed messages back in front of the queue, in their order."""
        self._pending.extendleft(reversed(items))
        self._pending_bytes += sum(len(k) + len(v) for k, v in items)
        self.counters[self._c_retried] += len(items)
        if self._pending_bytes + self._inflight_bytes > self._max_bytes:
            self._shed()

    def _reject(self, exc: BaseException) -> None:
        self.counters[self._c_error] += 1
        name = type(exc).__name__
        if name not in self._rejections_logged:  # once per kind, not per message
            self._rejections_logged.add(name)
            log.error("kafka rejected a message", topic=self.topic, brokers=self._brokers, error=_describe(exc))

    def _reset_producer(self, exc: BaseException, earlier: list[tuple[bytes, bytes]] | None = None) -> None:
        """Drop a producer that cannot recover (fatal idempotence state, closed).

        Messages still in flight go back to the queue: those the broker
        already stored are sent twice, which a fresh producer id cannot
        prevent; this only happens after the broker lost our producer state.
        """
        from kafka import errors

        producer, self._producer = self._producer, None
        self._append = None
        if producer is not None:
            _close_producer(producer, 0)
        retry = list(earlier or ())
        retry.extend(self._settle_inflight())
        if retry:
            self._requeue(retry)
        if self._idempotence and isinstance(
            exc, (errors.ClusterAuthorizationFailedError, errors.TransactionalIdAuthorizationFailedError)
        ):
            # Brokers that deny IDEMPOTENT_WRITE: fall back to plain acks=all
            # with one request in flight (ordered, duplicates possible on retry).
            self._idempotence = False
            log.warning("kafka idempotent producer refused, continuing without", brokers=self._brokers)
        self._next_attempt = time.monotonic() + self._backoff
        self._set_state("disconnected", _describe(exc))

    def _settle_inflight(self) -> list[tuple[bytes, bytes]]:
        """Empty ``_inflight`` (its producer already closed): count what was
        acknowledged or refused, return the rest in order for the caller to
        re-queue or count. Each message is counted here or returned, never both."""
        rest: list[tuple[bytes, bytes]] = []
        delivered = 0
        for future, key, value, _t in self._inflight:
            if future.is_done:  # kafka-python sets the exception before is_done
                exc = future.exception
                if exc is None:
                    delivered += 1
                    continue
                if _message_rejected(exc):
                    self._reject(exc)
                    continue
            rest.append((key, value))
        self._inflight.clear()
        self._inflight_bytes = 0
        if delivered:
            self.counters[self._c_delivered] += delivered
        return rest

    def _set_state(self, state: str, reason: str = "", **extra: Any) -> None:
        if state == self.state:
            return
        previous, self.state, self.reason = self.state, state, reason
        if state == "connected":
            if previous == "disconnected":
                self.counters[self._c_reconnects] += 1
            self._capture.last = ""  # a later disconnect should not quote this outage
            log.info("kafka connected", brokers=self._brokers, topic=self.topic, buffered=self.buffered_bytes)
        elif state == "disconnected":
            log.warning(
                "kafka disconnected",
                brokers=self._brokers,
                topic=self.topic,
                reason=reason,
                detail=self._capture.last,
                buffered=self.buffered_bytes,
                **extra,
            )
