"""The supervisor: owns the probes, routes records, keeps workers alive.

Like gunicorn's arbiter, it never parses traffic itself. Its main loop
drains the ring buffer on a short timer (programs submit without waking
us), routes each raw record by (tgid, fd) to one worker's batch, and hands
the batches to per-worker sender threads, so a slow worker costs its own
queue (counted when it overflows), never the ring buffer. Signal handlers
only enqueue; the loop dispatches. The process scanner runs in its own
thread so an ELF analysis never stalls the drain.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter, deque

from akto_collector import __version__, bpf, compiled, worker
from akto_collector.records import KIND_EXEC, KIND_EXIT, KIND_OFFSET, TGID_FD
from akto_collector.scanner import ProcessScanner

DRAIN_INTERVAL_MS = 10
QUEUE_BATCHES = 256  # batches waiting per worker before we drop (and count)
WORKER_STALL_SECONDS = 30.0
RESCAN_AFTER_EXEC = (0.0, 1.0, 3.0)  # libraries are often dlopen'ed after exec
EXIT_PROBES_FAILED = 3


SYSTEM_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib",
                   "/usr/local/lib", "/usr/lib/aarch64-linux-gnu")


def system_tls_libraries() -> list[str]:
    """The host's own libssl/libgnutls files (one path per file)."""
    found = {}
    for d in SYSTEM_LIB_DIRS:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if name.startswith(("libssl.so.", "libgnutls.so.")):
                path = os.path.join(d, name)
                found.setdefault(os.path.realpath(path), path)
    return sorted(found)


def private_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            fields = dict(line.split(b":", 1) for line in f if line.startswith((b"RssAnon", b"RssShmem")))
    except OSError:
        return 0
    return sum(int(v.split()[0]) for v in fields.values()) * 1024


class WorkerHandle:
    """One worker process, its data pipe and its sender thread."""

    def __init__(self, index: int, settings, output: str, ctx) -> None:
        self.index = index
        data_rx, self.data_tx = ctx.Pipe(duplex=False)
        self.report_rx, report_tx = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=worker.run, name=f"akto-worker-{index}",
                                   args=(index, settings, output, data_rx, report_tx), daemon=False)
        self.process.start()
        data_rx.close()
        report_tx.close()
        self.queue: queue.Queue = queue.Queue(QUEUE_BATCHES)
        # Bytes waiting for this worker: at least its queue share of
        # TRAFFIC_BUFFER_THRESHOLD (worker.budget_shares), and whatever of the
        # worker's whole share its streams and sink did not hold at its last
        # report (a backlog usually comes with idle stream and sink buffers).
        # Each counter has one writer (the loop adds, the sender thread takes
        # away), so no lock is needed.
        shares = worker.budget_shares(settings)
        self.budget = sum(shares)
        self.min_queue_bytes = self.max_queue_bytes = shares[0]
        self.submitted_bytes = 0
        self.sent_bytes = 0
        self.dropped = 0  # records lost because this worker's queue was full
        self.dropped_at_stop = 0  # batches dropped to make room for the stop order
        self.last_report: dict = {}
        self.last_seen = time.monotonic()
        self.sender = threading.Thread(target=self._send_loop, name=f"sender-{index}", daemon=True)
        self.sender.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _send_loop(self) -> None:
        while True:
            blob = self.queue.get()
            try:
                self.data_tx.send_bytes(blob)
            except (OSError, ValueError):
                return
            self.sent_bytes += len(blob)
            if not blob:
                return

    @property
    def queued_bytes(self) -> int:
        return self.submitted_bytes - self.sent_bytes

    def submit(self, blob: bytes, records: int) -> None:
        queued = self.submitted_bytes - self.sent_bytes
        if queued and queued + len(blob) > self.max_queue_bytes:  # an idle worker always gets one
            self.dropped += records
            return
        try:
            self.queue.put_nowait(blob)
        except queue.Full:
            self.dropped += records
            return
        self.submitted_bytes += len(blob)

    def read_reports(self) -> None:
        while self.report_rx.poll():
            try:
                self.last_report = self.report_rx.recv()
            except (EOFError, OSError):
                return
            self.last_seen = time.monotonic()
            held = int(self.last_report.get("buffered", 0))
            self.max_queue_bytes = max(self.min_queue_bytes, self.budget - held)

    def stop(self) -> None:
        """Ask the worker to flush and exit: an empty batch after its data. A
        backlog it could not finish in time is dropped here, and counted."""
        while self.queue.full():
            try:
                blob = self.queue.get_nowait()
            except queue.Empty:
                break
            self.dropped_at_stop += 1 if blob else 0
        self.queue.put(b"")


class Supervisor:
    def __init__(self, settings, output: str, log) -> None:
        self.settings = settings
        self.output = output
        self.log = log
        self.signals: deque[int] = deque()
        self.workers: list[WorkerHandle] = []
        self.probes: bpf.Probes | None = None
        self.batches: list[list[bytes]] = []
        self.records: list[bytes] = []  # one drain's records, reused
        self.ring_peak = 0  # most bytes found waiting in the ring buffer since the last stats line
        self.counters: Counter = Counter()  # the supervisor's own
        self.retired: Counter = Counter()  # last counters of workers that were replaced
        self.exec_pids: deque[int] = deque()
        self.scan_queue: queue.Queue = queue.Queue()
        self.started = time.time()
        self.restarts = int(os.environ.get("AKTO_COLLECTOR_RESTARTS", "0"))
        self.ctx = multiprocessing.get_context("spawn")
        self.stopping = False
        self.shut_down = False
        self.heartbeat = None

    # -- signals: handlers only enqueue -------------------------------------
    def handle_signal(self, signum, _frame) -> None:
        self.signals.append(signum)

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.handle_signal)

    # -- lifecycle -----------------------------------------------------------
    def run(self) -> int:
        self.install_signals()
        try:
            if not self.start():
                return EXIT_PROBES_FAILED
            status = compiled.module_status()
            if "stale" in status.values():
                self.log.warning("compiled_core_stale", detail="compiled modules built from other source than theirs "
                                 "run old code; rebuild with make setup or pip install .", modules=status)
            self.log.info("ready", workers=[w.pid for w in self.workers], pid=os.getpid(),
                          core=compiled.summary(status))
            self.loop()
        except bpf.ProbeError as exc:
            self.log.error("probes_failed", error=str(exc))
            return EXIT_PROBES_FAILED
        finally:
            self.shutdown()
        return 0

    def start(self) -> bool:
        """Workers, probes, the first scan. False when the probes cannot load."""
        s = self.settings
        note = bpf.ensure_kernel_headers()
        if note:
            self.log.warning("kernel_headers_fallback", detail=note)
        bpf.ensure_tracefs()
        self.log.info("starting", version=__version__, restarts=self.restarts, settings=s.describe())
        if s.mongo_conn:
            self.log.info("mongo_ignored", detail="AKTO_MONGO_CONN is accepted for manifest compatibility; "
                          "this collector keeps nothing in a database")
        for i in range(s.workers):
            self.workers.append(WorkerHandle(i, s, self.output, self.ctx))
        # The drain costs ~0.5 us a record but must run on time or the ring
        # buffer overflows; raise only the supervisor above the workers.
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -10)
        except OSError:
            pass
        self.batches = [[] for _ in self.workers]
        opts = bpf.ProbeOptions(
            max_conn=s.max_active_conn,
            capture_plain=s.capture_all,
            capture_tls=s.capture_ssl,
            disable_egress=s.disable_egress,
            filter_tls_pids=not s.probe_all_pid,
        )
        t0 = time.monotonic()
        self.probes = bpf.Probes(opts)
        self.probes.ignore_pid(os.getpid())
        for w in self.workers:
            self.probes.ignore_pid(w.pid)
        self.log.info("probes_loaded", seconds=round(time.monotonic() - t0, 2), capture_plain=s.capture_all,
                      capture_tls=s.capture_ssl)
        if s.capture_ssl:
            self.scanner = ProcessScanner(proc_root="/proc", probe_all_pid=s.probe_all_pid,
                                          ignore_pids=frozenset([os.getpid()] + [w.pid for w in self.workers]))
            self.scan(None)  # before `ready`: what runs now is covered when we say so
            if s.probe_all_pid:
                self.attach_results(self.scanner.scan_files(system_tls_libraries()))
            threading.Thread(target=self._scan_loop, name="scanner", daemon=True).start()
        self.heartbeat = self._make_heartbeat()
        return True

    def loop(self) -> None:
        s = self.settings
        now = time.monotonic()
        next_stats = now + s.stats_interval
        next_housekeeping = now + 1.0
        next_uprobe_poll = now + s.uprobe_poll_interval
        next_heartbeat = now + min(5.0, s.heartbeat_interval)
        probes = self.probes
        while not self.stopping:
            probes.wait(DRAIN_INTERVAL_MS)
            self.drain()
            self.flush_batches()
            if self.signals:
                self.dispatch_signal(self.signals.popleft())
            while self.exec_pids:
                pid = self.exec_pids.popleft()
                if s.capture_ssl:  # without TLS capture nothing consumes the scan queue
                    for delay in RESCAN_AFTER_EXEC:
                        self.scan_queue.put((time.monotonic() + delay, pid))
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + 1.0
                self.housekeep(self.manage_workers)
            if now >= next_stats:
                next_stats = now + s.stats_interval
                self.housekeep(self.log_stats)
                self.housekeep(self.expire_kernel_connections)
                self.housekeep(self.guard_memory)
            if now >= next_uprobe_poll and s.capture_ssl:
                next_uprobe_poll = now + s.uprobe_poll_interval
                self.scan_queue.put((now, None))
            if now >= next_heartbeat and self.heartbeat is not None:
                next_heartbeat = now + s.heartbeat_interval
                self.send_heartbeat()

    def housekeep(self, task) -> None:
        """Periodic work must never take the drain down: a failure is logged and counted."""
        try:
            task()
        except Exception as exc:  # noqa: BLE001
            self.counters["supervisor.housekeeping_failed"] += 1
            self.log.error("housekeeping_failed", task=task.__name__, error=repr(exc))

    def dispatch_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self.log_stats()
            return
        self.log.info("stopping", signal=signal.Signals(signum).name)
        self.stopping = True

    def shutdown(self) -> None:
        """Detach first (nothing of ours stays in the kernel), then let the
        workers finish what they hold and flush their sinks."""
        if self.shut_down:
            return
        self.shut_down = True
        if self.probes is not None:
            self.drain()
            self.flush_batches()
            kernel = self.probes.counters()
            self.probes.close()
            self.probes = None
            self.counters.update({k: v for k, v in kernel.items()})
        self.stop_workers()
        self.log_stats(final=True)
        if self.heartbeat is not None:
            self.send_heartbeat()
            self.heartbeat.close(timeout=2.0)
        self.log.info("stopped")

    def stop_workers(self, timeout: float = 7.0) -> None:
        for w in self.workers:
            w.stop()
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
        for w in self.workers:
            w.read_reports()
            if w.process.is_alive():
                self.log.warning("worker_kill", worker=w.index, pid=w.pid, queued_batches=w.queue.qsize())
                w.process.kill()
        for w in self.workers:
            w.process.join(1.0)
            self.counters["queue.dropped_batches_at_stop"] += w.dropped_at_stop

    # -- hot path: every ring buffer record passes here ----------------------
    def drain(self) -> None:
        """Route the records waiting in the ring buffer to their workers' batches."""
        records = self.records
        ring = self.probes.ring
        pending = ring.pending_bytes()
        if pending > self.ring_peak:
            self.ring_peak = pending
        self.probes.drain(records)
        batches = self.batches
        n = len(batches)
        for raw in records:
            kind = raw[KIND_OFFSET]
            if kind < KIND_EXEC:
                batches[hash(raw[TGID_FD]) % n].append(raw)
            elif kind == KIND_EXEC:
                self.exec_pids.append(int.from_bytes(raw[24:28], "little"))
            elif kind == KIND_EXIT:
                for b in batches:
                    b.append(raw)
        records.clear()

    def flush_batches(self) -> None:
        for w, batch in zip(self.workers, self.batches):
            if batch:
                w.submit(b"".join(batch), len(batch))
                batch.clear()

    # -- workers ---------------------------------------------------------------
    def manage_workers(self) -> None:
        """Reap dead workers and replace stalled ones (their heartbeat is the
        report they send from inside their loop)."""
        for i, w in enumerate(self.workers):
            w.read_reports()
            if w.process.is_alive():
                if time.monotonic() - w.last_seen > WORKER_STALL_SECONDS:
                    self.log.error("worker_stalled", worker=i, pid=w.pid)
                    w.process.kill()  # workers ignore SIGTERM: only the supervisor stops them
                    w.process.join(1.0)
                else:
                    continue
            code = w.process.exitcode
            if code == worker.EXIT_BOOT_FAILED:
                self.log.error("worker_cannot_boot", worker=i, detail="stopping: see the worker's error above")
                self.stopping = True
                return
            self.log.error("worker_died", worker=i, pid=w.pid, exitcode=code)
            self.retired.update(w.last_report.get("counters", {}))
            self.retired["queue.dropped_records"] += w.dropped
            self.retired["worker.restarts"] += 1
            lost = w.queue.qsize()
            self.retired["queue.dropped_batches_on_restart"] += lost
            nw = WorkerHandle(i, self.settings, self.output, self.ctx)
            if self.probes is not None:
                try:
                    self.probes.ignore_pid(nw.pid)
                except Exception as exc:  # noqa: BLE001 (a full table must not stop the supervisor)
                    self.counters["supervisor.ignore_pid_failed"] += 1
                    self.log.error("ignore_pid_failed", pid=nw.pid, error=str(exc))
            self.workers[i] = nw

    # -- observability -------------------------------------------------------
    def totals(self) -> Counter:
        total = Counter(self.retired)
        total.update(self.counters)
        for w in self.workers:
            total.update(w.last_report.get("counters", {}))
            total["queue.dropped_records"] += w.dropped
        if self.probes is not None:
            total.update(self.probes.counters())
        return total

    def log_stats(self, final: bool = False) -> None:
        total = self.totals()
        per_worker = [{"worker": w.index, "pid": w.pid, "connections": w.last_report.get("connections", 0),
                       "buffered": w.last_report.get("buffered", 0), "queue": w.queue.qsize(),
                       "queued_bytes": w.queued_bytes,
                       "sink": w.last_report.get("sink", "")} for w in self.workers]
        drops = {k: v for k, v in total.items() if "dropped" in k and v}
        self.log.info("stats_final" if final else "stats",
                      records=total.get("worker.records", 0), pairs=total.get("pairs", 0),
                      drops=drops, counters=dict(sorted(total.items())), workers=per_worker,
                      uprobes=len(self.probes.uprobes) if self.probes else 0,
                      ring_peak_pct=round(100 * self.ring_peak / self.probes.ring.size, 1) if self.probes else 0,
                      rss_mb=round(self.rss() / 1e6, 1))
        self.ring_peak = 0

    def _make_heartbeat(self):
        if not self.settings.kafka_brokers:
            return None
        from akto_collector.sinks import HeartbeatSender  # noqa: PLC0415 (only with Kafka)

        return HeartbeatSender(self.settings, self.counters)

    def send_heartbeat(self) -> None:
        total = self.totals()
        payload = {
            "id": self.settings.daemonset_id,
            "node": self.settings.node_name,
            "pod": self.settings.pod_name,
            "version": __version__,
            "uptime": int(time.time() - self.started),
            "restarts": self.restarts,
            "probes_attached": len(self.probes.uprobes) if self.probes else 0,
            "counters": dict(total),
            "ts": int(time.time()),
        }
        try:
            self.heartbeat.send(payload)
            self.heartbeat.poll()
        except Exception as exc:  # noqa: BLE001 (a heartbeat must never take the collector down)
            self.counters["heartbeat.failed"] += 1
            self.log.warning("heartbeat_failed", error=str(exc))

    # -- limits ----------------------------------------------------------------
    def expire_kernel_connections(self) -> None:
        n = self.probes.expire_connections(int(self.settings.inactivity_threshold * 1e9))
        if n:
            self.counters["kernel.expired_connections"] += n

    def rss(self) -> int:
        """Private resident memory of the collector (supervisor + workers).

        Anonymous and shared-memory pages only: the ~250 MB of LLVM/bcc code
        mapped by the supervisor is file-backed, shared and reclaimable, and
        would otherwise eat a third of the default threshold for nothing."""
        total = 0
        for pid in [os.getpid()] + [w.pid for w in self.workers]:
            total += private_rss(pid)
        return total

    def guard_memory(self) -> None:
        rss = self.rss()
        if rss <= self.settings.mem_thresh_restart_bytes:
            return
        self.log.warning("memory_restart", rss_mb=round(rss / 1e6, 1),
                         threshold_mb=self.settings.mem_thresh_restart_mb)
        self.shutdown()
        if self.signals or self.stopping:
            self.stopping = True
            return  # a SIGTERM came meanwhile: stop, do not restart
        env = dict(os.environ, AKTO_COLLECTOR_RESTARTS=str(self.restarts + 1))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", "akto_collector", *sys.argv[1:]], env)

    # -- TLS process scanner -----------------------------------------------------
    def _scan_loop(self) -> None:
        pending: list[tuple[float, int | None]] = []
        while True:
            timeout = max(0.0, min(t for t, _ in pending) - time.monotonic()) if pending else 1.0
            try:
                pending.append(self.scan_queue.get(timeout=timeout))
            except queue.Empty:
                pass
            now = time.monotonic()
            due = [p for p in pending if p[0] <= now]
            if not due:
                continue
            pending = [p for p in pending if p[0] > now]
            full = any(pid is None for _, pid in due)
            try:
                self.scan(None if full else sorted({pid for _, pid in due}))
            except Exception as exc:  # noqa: BLE001 (the scanner thread must survive anything)
                self.log.error("scan_failed", error=str(exc))

    def scan(self, pids) -> None:
        if self.probes is None:
            return
        self.attach_results(self.scanner.scan(pids=pids))

    def attach_results(self, result) -> None:
        probes = self.probes
        for key, lib in result.libraries.items():
            if not self.settings.probe_all_pid:
                for pid in lib.pids:
                    probes.allow_tls_pid(pid)
            if key in probes.uprobes:
                continue
            try:
                attached = probes.attach_tls(key, lib.path, lib.kind, lib.symbols)
            except bpf.ProbeError as exc:
                self.counters["uprobe.attach_failed"] += 1
                self.log.warning("uprobe_attach_failed", library=lib.path, kind=lib.kind,
                                 pids=sorted(lib.pids)[:10], error=str(exc), retry="next scan")
                continue
            comms = sorted({self.scanner_comm(p) for p in list(lib.pids)[:5]})
            self.log.info("uprobe_attached", library=lib.path, kind=lib.kind, version=lib.version,
                          symbols=attached, pids=sorted(lib.pids)[:10], comm=comms)
        for u in result.unsupported:
            self.log.warning("tls_not_capturable", pid=u.pid, comm=u.comm, reason=u.reason)
        for e in result.errors:
            self.log.debug("scan_pid_failed", pid=e.pid, reason=e.reason, retry="next scan")

    @staticmethod
    def scanner_comm(pid: int) -> str:
        from akto_collector.procfs import process_comm  # noqa: PLC0415

        return process_comm(pid)
