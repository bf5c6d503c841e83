"""A parser worker: raw kernel records in, Akto messages out.

Each worker owns the connections of its shard (the supervisor routes by
tgid and fd), so everything here is single-threaded and lock-free: decode
the batch, reassemble and parse per connection, filter, encode, hand to the
sink. It reports its counters (and so proves it is alive) to the supervisor
once a second; an empty batch is the order to flush and exit.
"""

from __future__ import annotations

try:
    import cython

    COMPILED = cython.compiled  # handle_batch reads record headers in place only in C
except ImportError:
    COMPILED = False

import ipaddress
import os
import signal
import time
from collections import Counter, deque

from akto_collector import exits, logs
from akto_collector.allocator import tune_allocator
from akto_collector.kernel.records import (
    ADDR,
    DIR_AT,
    FD_AT,
    FLAGS_AT,
    GEN_AT,
    HDR_SIZE,
    KIND_ADDR,
    KIND_CLOSE,
    KIND_DATA,
    KIND_EXIT,
    KIND_OFFSET,
    KIND_OPEN,
    LEN_OFFSET,
    OFFSET_AT,
    POS_AT,
    PROTO_AT,
    RECORD,
    ROLE_AT,
    TGID_AT,
    TOTAL_AT,
    TS_AT,
)
from akto_collector.events import ROLE_CLIENT, ROLE_SERVER, ConnId, ConnMeta
from akto_collector.filters import PairFilter
from akto_collector.message import MessageEncoder
from akto_collector.redact import Redactor
from akto_collector.tags import KIND_TAGS, base_tag
from akto_collector.addresses import host_of, join_host_port
from akto_collector.procfs import fd_target, process_comm, socket_addresses
from akto_collector.sinks import make_sink
from akto_collector.protocols import PROTO_HTTP2
from akto_collector.protocols.streams import ConnectionStream, CoreLimits

REPORT_EVERY = 1.0
# A NamedTuple's own __new__ runs interpreted, even in the compiled module:
# per record, tuple.__new__ makes the same object in a third of the time.
_new_tuple = tuple.__new__
# A connection's data can reach the ring after its close record: Go's TLS
# data is emitted at the return of (*Conn).Write, and another goroutine may
# close the socket (on another CPU) in between. A closed connection is
# finished this long after its close record, so that such data still lands
# (the kernel counts it: kernel.go_tls.data_after_close): longer than the
# drain's longest wait (arbiter.IDLE_DRAIN_INTERVAL_MS, 150 ms), which may
# fall between the two. What a close completes waits as long; complete pairs
# never wait.
CLOSE_GRACE = 0.5
# A test hook: worker 0 stops reporting this many seconds after it started
# (as a stuck worker would). Not a setting: no AKTO_ prefix, never documented.
STALL_HOOK = "_AKTO_TEST_WORKER_STALL"
_PROTOCOL_OF = {"HTTP/2.0": "http2", "gRPC": "grpc"}  # any other version is HTTP/1
PAIR_PROTOCOLS = ("http1", "http2", "grpc")
AF_INET = 2


def _address(family: int, raw: bytes, port: int) -> str:
    if family == AF_INET:
        ip = str(ipaddress.IPv4Address(raw[:4]))
    else:
        addr = ipaddress.IPv6Address(raw)
        ip = str(addr.ipv4_mapped or addr)
    return join_host_port(ip, port)


def pairs_key(protocol: str, direction: str) -> str:
    """The counter a pair is counted under, besides "pairs": pairs.<protocol>.<direction>
    (protocol one of PAIR_PROTOCOLS, direction "1" served or "2" made)."""
    return f"pairs.{protocol}.{direction}"


def _pair_key(ex) -> str:
    return pairs_key(_PROTOCOL_OF.get(ex.request.version, "http1"), "2" if ex.role == ROLE_CLIENT else "1")


_PAIR_KEYS = {(version, role): pairs_key(_PROTOCOL_OF.get(version, "http1"), "2" if role == ROLE_CLIENT else "1")
              for version in ("HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "gRPC") for role in (ROLE_SERVER, ROLE_CLIENT)}


def budget_shares(settings, total: int | None = None) -> tuple[int, int, int]:
    """One worker's share of the buffer budget (TRAFFIC_BUFFER_THRESHOLD, or
    ``total`` when the supervisor found less room under the memory threshold),
    in bytes: (records queued for it in the supervisor, its stream buffers,
    its sink's queue)."""
    total = settings.buffer_threshold_bytes if total is None else total
    budget = total // max(1, settings.workers)
    queued = budget // 4
    streams = (budget - queued) // 2
    return queued, streams, budget - queued - streams


class Worker:
    """The per-shard pipeline; `handle_batch` is the hot path."""

    # Compiled, the worker is an extension type (worker.pxd): these are C
    # struct members, read per pair without a dict lookup each.
    __slots__ = ("index", "settings", "counters", "stream_budget", "sink", "encoder", "filter", "limits",
                 "disable_egress", "idle", "streams", "metas", "role_hints", "meta_seen", "by_tgid",
                 "close_grace", "closing", "base_tag", "tags", "clock_offset")

    def __init__(self, index: int, settings, output: str, counters: Counter | None = None,
                 budget: int | None = None) -> None:
        self.index = index
        self.settings = settings
        self.counters = counters if counters is not None else Counter()
        _queue, self.stream_budget, sink_budget = budget_shares(settings, budget)
        self.sink = make_sink(settings, output=output, counters=self.counters, max_buffer_bytes=sink_budget)
        self.encoder = MessageEncoder(settings.account_id, settings.vxlan_id, settings.daemonset_id,
                                      Redactor.from_settings(settings, self.counters))
        self.filter = PairFilter.from_settings(settings)
        self.limits = CoreLimits(max_body_bytes=settings.max_body_bytes)
        self.disable_egress = settings.disable_egress
        self.idle = settings.inactivity_threshold
        self.streams: dict[ConnId, ConnectionStream] = {}
        self.metas: dict[ConnId, ConnMeta] = {}
        self.role_hints: dict[ConnId, int] = {}
        self.meta_seen: dict[ConnId, float] = {}  # last time a connection's metadata was used
        self.by_tgid: dict[int, set[ConnId]] = {}  # for process exit
        self.close_grace = CLOSE_GRACE
        self.closing: deque = deque()  # (due on the monotonic clock, conn, the close's time), in due order
        # The supervisor's word on each process's tag (KIND_TAGS records); the rest have the fixed tags.
        self.base_tag = base_tag(settings.inject_tags)
        self.tags: dict[int, str] = {}
        # bpf_ktime_get_ns is CLOCK_MONOTONIC: one offset turns it into wall time.
        self.clock_offset = time.time() - time.monotonic()

    # -- hot path -----------------------------------------------------------
    def handle_batch(self, blob: bytes) -> None:
        unpack = RECORD.unpack_from
        streams = self.streams
        counters = self.counters
        off, end = 0, len(blob)
        n = 0
        due = time.monotonic() + self.close_grace
        clock_offset = self.clock_offset
        emit = self.emit
        # Compiled, the header's fields are read in place through a char
        # pointer (C loads, x86-64 reads unaligned words) at offsets held in
        # C integers, instead of a tuple of 14 ints from struct.
        p = blob
        ts_at, gen_at, pos_at, tgid_at, fd_at = TS_AT, GEN_AT, POS_AT, TGID_AT, FD_AT
        total_at, offset_at, len_at = TOTAL_AT, OFFSET_AT, LEN_OFFSET
        kind_at, flags_at, dir_at, role_at, proto_at = KIND_OFFSET, FLAGS_AT, DIR_AT, ROLE_AT, PROTO_AT
        while off < end:
            if off + HDR_SIZE > end:  # a short record at the end: never read past the blob (C loads below)
                counters["worker.dropped.truncated_record"] += 1
                break
            if COMPILED:
                h = p + off
                ts_ns = cython.cast(cython.p_ulonglong, h + ts_at)[0]
                gen = cython.cast(cython.p_ulonglong, h + gen_at)[0]
                call_pos = cython.cast(cython.p_ulonglong, h + pos_at)[0]
                tgid = cython.cast(cython.p_uint, h + tgid_at)[0]
                fd = cython.cast(cython.p_uint, h + fd_at)[0]
                total = cython.cast(cython.p_uint, h + total_at)[0]
                offset = cython.cast(cython.p_uint, h + offset_at)[0]
                ln = cython.cast(cython.p_ushort, h + len_at)[0]
                kind, flags, direction, role, proto = h[kind_at], h[flags_at], h[dir_at], h[role_at], h[proto_at]
            else:
                ts_ns, gen, call_pos, tgid, fd, total, offset, ln, kind, flags, direction, role, proto, _ = \
                    unpack(blob, off)
            start = off + HDR_SIZE
            off = start + ln
            n += 1
            # A plain tuple finds the ConnId keys (a NamedTuple hashes and
            # compares as its tuple); the ConnId itself, an object more per
            # record, is made only where one is kept.
            key = (tgid, fd, gen)
            ts = ts_ns / 1e9 + clock_offset
            try:
                if kind == KIND_DATA:
                    cs = streams.get(key)
                    if cs is None:
                        conn = _new_tuple(ConnId, key)
                        if len(streams) >= self.settings.max_active_conn:
                            counters["worker.dropped.conn_limit"] += 1
                            continue
                        cs = streams[conn] = ConnectionStream(conn, self.limits, counters,
                                                              role_hint=self.role_hints.pop(conn, role))
                        self.by_tgid.setdefault(tgid, set()).add(conn)
                    if cs.finished:  # CONNECT/Upgrade: tunnel bytes until close
                        continue
                    for ex in cs.on_data(ts, direction, call_pos, total, offset, flags, blob[start:off], proto):
                        emit(ex)
                elif kind == KIND_ADDR or kind == KIND_OPEN:
                    self.on_address(_new_tuple(ConnId, key), kind, role, blob[start:off], ts)
                elif kind == KIND_CLOSE:
                    self.closing.append((due, _new_tuple(ConnId, key), ts))
                elif kind == KIND_EXIT:
                    for c in self.by_tgid.get(tgid, ()):
                        self.closing.append((due, c, ts))
                    self.tags.pop(tgid, None)
                elif kind == KIND_TAGS:
                    n -= 1  # the supervisor's, not the kernel's
                    self.on_tags(tgid, blob[start:off])
            except Exception as exc:  # noqa: BLE001 (one bad connection must not take the shard down)
                counters["worker.error." + type(exc).__name__] += 1
                self.forget(_new_tuple(ConnId, key))
        counters["worker.records"] += n
        if self.closing:
            self.finish_closed(time.monotonic())

    def finish_closed(self, now: float) -> None:
        """Finish the connections closed at least close_grace ago."""
        closing = self.closing
        while closing and closing[0][0] <= now:
            _, conn, ts = closing.popleft()
            self.close(conn, ts)

    def on_address(self, conn: ConnId, kind: int, role: int, payload: bytes, ts: float) -> None:
        family, sport, dport, _, saddr, daddr, comm = ADDR.unpack_from(payload)
        meta = self.metas.get(conn)
        if meta is None:
            meta = self.metas[conn] = ConnMeta(pid=conn.tgid, fd=conn.fd,
                                               tag=self.tags.get(conn.tgid, self.base_tag))
            self.by_tgid.setdefault(conn.tgid, set()).add(conn)
        self.meta_seen[conn] = ts
        meta.comm = comm.split(b"\0", 1)[0].decode("utf-8", "replace")
        if kind == KIND_OPEN:
            self.role_hints[conn] = role
            if family:
                meta.peer = _address(family, daddr, dport)
        else:
            meta.local = _address(family, saddr, sport)
            meta.peer = _address(family, daddr, dport)

    def on_tags(self, tgid: int, payload: bytes) -> None:
        """The process's tag from here on (empty: the fixed tags), its open connections' too."""
        if payload:
            tag = self.tags[tgid] = payload.decode()
        else:
            self.tags.pop(tgid, None)
            tag = self.base_tag
        for conn in self.by_tgid.get(tgid, ()):
            meta = self.metas.get(conn)
            if meta is not None:
                meta.tag = tag

    def close(self, conn: ConnId, ts: float) -> None:
        cs = self.streams.pop(conn, None)
        if cs is not None:
            for ex in cs.on_close(ts):
                self.emit(ex)
        self.forget(conn)

    def forget(self, conn: ConnId) -> None:
        self.streams.pop(conn, None)
        self.metas.pop(conn, None)
        self.meta_seen.pop(conn, None)
        self.role_hints.pop(conn, None)
        conns = self.by_tgid.get(conn.tgid)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.by_tgid[conn.tgid]

    def emit(self, ex) -> None:
        counters = self.counters
        if self.disable_egress and ex.role == ROLE_CLIENT:
            counters["filter.egress"] += 1
            return
        meta = self.metas.get(ex.conn)
        if meta is None or not meta.local:
            meta = self._resolve(ex.conn, meta)
            if meta is None:
                counters["dropped.not_a_socket"] += 1
                return
        self.meta_seen[ex.conn] = ex.response.ts
        peer_ip = host_of(meta.peer) if meta.peer else None
        host = meta.local if ex.role == ROLE_SERVER else meta.peer
        reason = self.filter.check(ex, host=host or None, peer_ip=peer_ip)
        if reason:
            counters[reason] += 1
            return
        key, value = self.encoder.encode(ex, meta)
        self.sink.send(key, value)
        counters["pairs"] += 1
        counters[_PAIR_KEYS.get((ex.request.version, ex.role)) or _pair_key(ex)] += 1

    def _resolve(self, conn: ConnId, meta: ConnMeta | None) -> ConnMeta | None:
        """Addresses of a connection that predates the collector, from /proc.
        None when the fd is not a socket: the syscall path takes an fd it did
        not see opened on the look of its data, and a file can look so."""
        if meta is None:
            link = fd_target("/proc", conn.tgid, conn.fd)
            if link is not None and not link.startswith("socket:["):
                return None
            meta = self.metas[conn] = ConnMeta(pid=conn.tgid, fd=conn.fd, tag=self.tags.get(conn.tgid, self.base_tag))
        if not meta.comm:
            meta.comm = process_comm("/proc", conn.tgid)
        found = socket_addresses("/proc", conn.tgid, conn.fd)
        if found:
            meta.local, meta.peer = found
        else:
            self.counters["worker.address_unknown"] += 1
            meta.local = meta.local or "0.0.0.0:0"
        return meta

    # -- housekeeping --------------------------------------------------------
    def now(self) -> float:
        """Wall-clock time on the events' clock (monotonic + the offset at start)."""
        return time.monotonic() + self.clock_offset

    def expire(self, now: float) -> None:
        """Finish connections idle for TRAFFIC_INACTIVITY_THRESHOLD, and keep
        stream buffers within their share of TRAFFIC_BUFFER_THRESHOLD."""
        cutoff = now - self.idle
        for conn, cs in list(self.streams.items()):
            if cs.last_seen < cutoff:
                for ex in cs.expire():
                    self.emit(ex)
                del self.streams[conn]
                self.counters["worker.expired_connections"] += 1
                if conn not in self.meta_seen:
                    self.forget(conn)
            elif cs.proto == PROTO_HTTP2:  # its streams may be idle while the connection is not
                for ex in cs.expire_idle(now, self.idle):
                    self.emit(ex)
        # Metadata outlives an idle stream (a late byte resyncs on the same
        # connection), but not a connection that stays silent.
        for conn in [c for c, seen in self.meta_seen.items() if seen < cutoff and c not in self.streams]:
            self.forget(conn)
        held = sum(cs.buffered for cs in self.streams.values())
        if held > self.stream_budget:
            for conn, cs in sorted(self.streams.items(), key=lambda kv: kv[1].last_seen):
                if held <= self.stream_budget:
                    break
                held -= cs.buffered
                for ex in cs.expire():
                    self.emit(ex)
                self.forget(conn)
                self.counters["buffer.dropped_connections"] += 1

    def report(self) -> dict:
        return {
            "worker": self.index,
            "pid": os.getpid(),
            "ts": time.time(),
            "connections": len(self.streams),
            "metas": len(self.metas),
            "buffered": sum(cs.buffered for cs in self.streams.values()) + self.sink.buffered_bytes,
            "sink": self.sink.state,
            "sink_messages": self.sink.buffered_messages,
            "counters": dict(self.counters),
        }


def run(index: int, settings, output: str, data_rx, report_tx, budget: int | None = None) -> None:
    """Entry point of a worker process."""
    # The supervisor decides when we stop (an empty batch); a Ctrl-C on the
    # terminal reaches the whole process group and must not kill us first.
    # SIGTERM keeps its default: the supervisor sends it to a stuck worker
    # (systemd's KillMode=mixed and Kubernetes signal only the supervisor).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tune_allocator()
    log = logs.configure(settings.log_level, role="worker", worker=index, pid=os.getpid())
    try:
        worker = Worker(index, settings, output, budget=budget)
    except Exception as exc:  # noqa: BLE001 (any boot failure ends the same way)
        log.error("worker_boot_failed", error=str(exc))
        os._exit(exits.WORKER_BOOT)  # the supervisor must not respawn a worker that cannot boot
    log.info("worker_started")
    next_report = time.monotonic() + REPORT_EVERY
    poll = settings.kafka_poll_interval
    stall = os.environ.get(STALL_HOOK, "")
    stall_at = time.monotonic() + float(stall) if stall and index == 0 else None
    while True:
        if stall_at is not None and time.monotonic() >= stall_at:
            while True:  # the test hook: stuck, reporting nothing
                time.sleep(1.0)
        if data_rx.poll(min(poll, 0.1)):
            try:
                blob = data_rx.recv_bytes()
            except EOFError:
                break
            if not blob:
                break
            worker.handle_batch(blob)
        elif worker.closing:
            worker.finish_closed(time.monotonic())
        worker.sink.poll()
        now = time.monotonic()
        if now >= next_report:
            next_report = now + REPORT_EVERY
            worker.expire(worker.now())
            report_tx.send(worker.report())
    # Order to stop: connections still open keep their half messages (counted
    # by expire), what is complete was already emitted; flush the sink.
    worker.finish_closed(float("inf"))
    for cs in worker.streams.values():
        for ex in cs.expire():  # HTTP/2 streams that have their response go out, marked
            worker.emit(ex)
    worker.sink.close(timeout=5.0)
    try:
        report_tx.send(worker.report())
    except OSError:
        pass
    log.info("worker_stopped", **{k: v for k, v in worker.counters.items() if k.startswith(("pairs", "sink."))})
