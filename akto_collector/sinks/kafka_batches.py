"""Writes Kafka records straight into kafka-python 3.0's open producer batches.

The one module of the project that reaches into a library's internals, and
only behind ``fast_append(producer)``: it returns an append function with
the signature and result of ``RecordAccumulator.append`` when the internals
look exactly as expected (their shape, and a batch written here byte for
byte equal to one kafka-python writes), and None otherwise, in which case
the sink uses the public ``producer.send()``. ``AKTO_KAFKA_BATCH_WRITER=false``
makes the sink never call it. kafka-python is pinned ``<3.1`` in setup.cfg
for this reason; an upgrade must re-run tests/unit/test_sinks.py and
bench/bench_kafka.py.
"""

from __future__ import annotations

import inspect
import time
from typing import Any


# send() wakes kafka-python's sender thread (a byte on a socketpair) for every
# message appended while a partition has a batch ready, which under load is
# most of them; each wake-up is a syscall and lets the sender thread take the
# GIL. The hand-over wakes it for the first ready batch, then at most once
# per this many messages, and at its end.
WAKEUP_EVERY = 64


def fast_append(producer: Any) -> Any:
    """``(append, sender.wakeup, appender)`` for a kafka-python 3.0 producer, or None.

    ``append(tp, timestamp_ms, key, value, headers)`` has the signature and
    result of ``RecordAccumulator.append``: ``(future, batch_is_full,
    new_batch, False)``. Where the batch internals look as expected it is the
    append of ``appender``, a ``_BatchAppender`` (records written straight
    into the open batch), else the accumulator's own (``appender`` None). KafkaProducer.send() spends about a third
    of its time on checks that hold for every message we give it (types,
    headers, metadata present, partition valid, size: the caller ensures
    these) and on a debug log line that formats the producer every time.
    Never for a transactional producer; None means: use send().
    """
    try:
        accumulator = producer._accumulator
        wakeup = producer._sender.wakeup
        params = list(inspect.signature(accumulator.append).parameters)
        manager = getattr(producer, "_transaction_manager", None)
        if manager is not None and manager.is_transactional():
            return None
    except Exception:
        return None
    if params[:5] != ["tp", "timestamp_ms", "key", "value", "headers"] or "abort_on_new_batch" not in params:
        return None
    appender = _BatchAppender.for_accumulator(accumulator)
    return (appender.append if appender is not None else accumulator.append), wakeup, appender


# Zigzag varints of 0..63 (one byte each), the usual sizes of the small fields.
_VARINT1 = [bytes([n << 1]) for n in range(64)]


def _varint(n: int) -> bytes:
    """Kafka's zigzag varint (as kafka.record.util.encode_varint)."""
    if 0 <= n < 64:
        return _VARINT1[n]
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _write_record(records: Any, timestamp_ms: int, key: bytes, value: bytes) -> int:
    """Append one record (no headers) to an open MemoryRecordsBuilder, as its
    own append() would; return its offset in the batch, or -1 when full."""
    builder = records._builder
    buf = builder._buffer
    first = builder._first_timestamp
    offset = records._next_offset
    v_ts = _varint(0 if first is None else timestamp_ms - first)
    v_off = _varint(offset)
    v_key = _varint(len(key))
    v_val = _varint(len(value))
    size = 2 + len(v_ts) + len(v_off) + len(v_key) + len(key) + len(v_val) + len(value)
    v_size = _varint(size)
    if first is not None and len(buf) + len(v_size) + size > builder._batch_size:
        return -1
    buf += v_size
    buf.append(0)  # attributes
    buf += v_ts
    buf += v_off
    buf += v_key
    buf += key
    buf += v_val
    buf += value
    buf.append(0)  # no headers
    if first is None:
        builder._first_timestamp = builder._max_timestamp = timestamp_ms
    elif timestamp_ms > builder._max_timestamp:
        builder._max_timestamp = timestamp_ms
    builder._num_records += 1
    builder._last_offset = offset
    records._next_offset = offset + 1
    return offset


class _InBatch:
    """The outcome of one record written by _BatchAppender: its batch's.

    kafka-python completes a batch's future with (base offset, log append
    time, record_exceptions_fn), failures included; the function says what
    happened to the record at an index. Only read once ``is_done``. It sits
    in the batch's list of record futures, so that a batch the broker finds
    too large and kafka-python splits moves it to its new batch (rebind).
    """

    __slots__ = ("_batch", "_index")

    def __init__(self, batch_future: Any, index: int) -> None:
        self._batch = batch_future
        self._index = index

    def rebind(self, batch_future: Any, index: int) -> None:
        self._batch = batch_future
        self._index = index

    @property
    def is_done(self) -> bool:
        return self._batch.is_done

    @property
    def exception(self) -> BaseException | None:
        batch = self._batch
        if batch.exception is not None:
            return batch.exception
        result = batch.value
        if result is not None and result[2] is not None:
            return result[2](self._index)
        return None


class _BatchAppender:
    """Writes records straight into kafka-python 3.0's open producer batches.

    Why: RecordAccumulator.append costs about 8 µs a message here (type
    checks, a future per record with callbacks that the sender thread then
    runs one by one, a metadata object), which end to end was a third of
    what a captured pair cost. Here a record costs its encoding; its outcome
    is read from its batch's future (``_InBatch``). Batches are created,
    locked and registered exactly as the accumulator does, so the sender
    thread (draining, idempotence sequence numbers, retries, compression)
    is kafka-python's own. These are internals: ``for_accumulator`` checks
    their shape and that a batch written here is byte for byte what
    kafka-python writes, and returns None otherwise.

    ``_appends_in_progress`` is not counted: it guards appends racing with
    close(), and the sink only ever closes its producer from the thread
    that appends.
    """

    __slots__ = ("_acc", "_batches", "_tp_lock", "_incomplete", "_new_records", "_new_batch",
                 "_closed_error", "_magic", "_attrs", "batch_size")

    def __init__(self, accumulator: Any) -> None:
        from kafka.errors import IllegalStateError
        from kafka.producer.producer_batch import ProducerBatch
        from kafka.record.memory_records import MemoryRecordsBuilder

        config = accumulator.config
        self._acc = accumulator
        self._batches = accumulator._batches
        self._tp_lock = accumulator._tp_lock
        self._incomplete = accumulator._incomplete
        self._new_records = MemoryRecordsBuilder
        self._new_batch = ProducerBatch
        self._closed_error = IllegalStateError
        self._magic = config["message_version"]
        self._attrs = config["compression_attrs"]
        # Uncompressed bytes per new batch; the sink lowers it so that every
        # partition's open batch can fill within its in-flight cap.
        self.batch_size = config["batch_size"]

    @classmethod
    def for_accumulator(cls, accumulator: Any) -> _BatchAppender | None:
        try:
            appender = cls(accumulator)
            if appender._magic != 2 or not callable(appender._tp_lock) or not hasattr(appender._incomplete, "add"):
                return None
            probe = appender._new_batch(None, appender._new_records(2, appender._attrs, 1024))
            if not isinstance(getattr(probe, "_record_futures", None), list):
                return None  # a split batch could not carry our records' handles along
            if _same_batch_bytes():
                return appender
        except Exception:  # noqa: BLE001 (any surprise: use the accumulator's append)
            pass
        return None

    def append(self, tp: Any, timestamp_ms: Any, key: bytes, value: bytes, headers: Any,
               now: float | None = None, abort_on_new_batch: bool = False) -> tuple[Any, bool, bool, bool]:
        if self._acc._closed:
            raise self._closed_error("RecordAccumulator is closed")
        if timestamp_ms is None:
            timestamp_ms = int(time.time() * 1000)
        now = time.monotonic() if now is None else now
        with self._tp_lock(tp):
            dq = self._batches[tp]
            new_batch = False
            index = -1
            if dq:
                batch = dq[-1]
                if not batch.records._closed:
                    index = _write_record(batch.records, timestamp_ms, key, value)
            if index < 0:
                records = self._new_records(self._magic, self._attrs, self.batch_size)
                batch = self._new_batch(tp, records, now=now)
                index = _write_record(records, timestamp_ms, key, value)
                dq.append(batch)
                self._incomplete.add(batch)
                new_batch = True
            batch.last_append = now
            handle = _InBatch(batch.produce_future, index)
            batch._record_futures.append(handle)
            builder = batch.records._builder
            full = len(dq) > 1 or len(builder._buffer) >= builder._batch_size
            return handle, full, new_batch, False


def _same_batch_bytes() -> bool:
    """A batch written by _write_record equals one kafka-python writes itself.

    Compared uncompressed: compression is kafka-python's own step over the
    same buffer, and gzip output carries a timestamp (two compressions a
    second apart differ).
    """
    from kafka.record.memory_records import MemoryRecordsBuilder

    ours = MemoryRecordsBuilder(2, 0, 1 << 16)
    theirs = MemoryRecordsBuilder(2, 0, 1 << 16)
    ts = int(time.time() * 1000)
    for i, (key, value) in enumerate([(b"10.0.0.1", b"{}"), (b"k" * 70, b"v" * 300), (b"", b"x" * 20000)]):
        if _write_record(ours, ts + i * 1000, key, value) != i:
            return False
        theirs.append(ts + i * 1000, key, value, [])
    ours.close()
    theirs.close()
    return bytes(ours.buffer()) == bytes(theirs.buffer())
