"""The arbiter: owns the probes, keeps the workers alive, runs the loop.

Like gunicorn's arbiter it never parses traffic. Its loop waits up to 10 ms
for the ring buffer, lets the router drain it and hand the batches to the
workers, then does the periodic work: reap and replace workers, stats,
kernel table expiry, the memory guard, heartbeats. Signal handlers only
enqueue; the loop dispatches. Exit codes are ``exits``'s.

Collaborators, each in its own module: ``router`` (the data plane),
``workers`` (one worker process, its pipe and queue), ``uprobes`` (the scan
thread and attaching), ``memory``, ``stats``. The kernel side comes from
``probes_factory`` and worker processes from ``ctx``, so the supervision
decisions can be tested without either.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections import Counter, deque

from akto_collector import __version__, compiled, exits
from akto_collector.kernel import headers
from akto_collector.kernel.errors import ProbeError
from akto_collector.supervisor import stats
from akto_collector.supervisor.memory import private_memory
from akto_collector.supervisor.router import Router
from akto_collector.supervisor.uprobes import UprobeManager
from akto_collector.supervisor.workers import WorkerHandle

DRAIN_INTERVAL_MS = 10
WORKER_STALL_SECONDS = 30.0
HOUSEKEEPING_SECONDS = 1.0


def _load_probes(settings):
    from akto_collector.kernel import loader  # noqa: PLC0415 (bcc only where the kernel side runs)

    return loader.Probes(loader.ProbeOptions.from_settings(settings))


class Arbiter:
    """The supervisor process."""

    def __init__(self, settings, output: str, log, ctx=None, probes_factory=_load_probes) -> None:
        self.settings = settings
        self.output = output
        self.log = log
        self.ctx = ctx if ctx is not None else multiprocessing.get_context("spawn")
        self.probes_factory = probes_factory
        self.signals: deque[int] = deque()
        self.workers: list[WorkerHandle] = []
        self.probes = None
        self.router = Router(settings.workers)
        self.uprobes: UprobeManager | None = None
        self.counters: Counter = Counter()  # the supervisor's own
        self.retired: Counter = Counter()  # last counters of workers that were replaced
        self.started = time.time()
        self.restarts = int(os.environ.get("AKTO_COLLECTOR_RESTARTS", "0"))
        self.stopping = False
        self.exit_code = exits.OK
        self.shut_down = False
        self.heartbeat = None

    # -- signals: handlers only enqueue -------------------------------------------------

    def handle_signal(self, signum, _frame) -> None:
        self.signals.append(signum)

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.handle_signal)

    def dispatch_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self.log_stats()
            return
        self.log.info("stopping", signal=signal.Signals(signum).name)
        self.stopping = True

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> int:
        self.install_signals()
        try:
            self.start()
            status = compiled.module_status()
            if "stale" in status.values():
                self.log.warning("compiled_core_stale", detail="compiled modules built from other source than theirs "
                                 "run old code; rebuild with make setup or pip install .", modules=status)
            self.log.info("ready", workers=[w.pid for w in self.workers], pid=os.getpid(),
                          core=compiled.summary(status))
            self.loop()
        except ProbeError as exc:
            self.log.error("probes_failed", error=str(exc))
            self.exit_code = exits.KERNEL
        finally:
            self.shutdown()
        return self.exit_code

    def start(self) -> None:
        """Workers, probes, the first scan. Raises ProbeError when the kernel side cannot be set up."""
        s = self.settings
        note = headers.ensure_kernel_headers()
        if note:
            self.log.warning("kernel_headers_fallback", detail=note)
        headers.ensure_tracefs()
        self.log.info("starting", version=__version__, restarts=self.restarts, settings=s.describe())
        if s.mongo_conn:
            self.log.info("mongo_ignored", detail="AKTO_MONGO_CONN is accepted for manifest compatibility; "
                          "this collector keeps nothing in a database")
        for i in range(s.workers):
            self.workers.append(self.spawn_worker(i))
        # The drain costs ~0.5 us a record but must run on time or the ring
        # buffer overflows; raise only the supervisor above the workers.
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -10)
        except OSError:
            pass
        t0 = time.monotonic()
        self.probes = self.probes_factory(s)
        self.probes.ignore_pid(os.getpid())
        for w in self.workers:
            self.probes.ignore_pid(w.pid)
        self.log.info("probes_loaded", seconds=round(time.monotonic() - t0, 2), capture_plain=s.capture_all,
                      capture_tls=s.capture_ssl)
        if s.capture_ssl:
            self.uprobes = UprobeManager(s, self.probes, self.log, self.counters,
                                         ignore_pids=[os.getpid()] + [w.pid for w in self.workers])
            self.uprobes.start()  # before `ready`: what runs now is covered when we say so
        if s.kafka_brokers:
            from akto_collector.sinks.heartbeat import HeartbeatSender  # noqa: PLC0415 (only with Kafka)

            self.heartbeat = HeartbeatSender(s, self.counters)

    def loop(self) -> None:
        s = self.settings
        now = time.monotonic()
        next_stats = now + s.stats_interval
        next_housekeeping = now + HOUSEKEEPING_SECONDS
        next_uprobe_poll = now + s.uprobe_poll_interval
        next_heartbeat = now + min(5.0, s.heartbeat_interval)
        probes, router = self.probes, self.router
        while not self.stopping:
            probes.wait(DRAIN_INTERVAL_MS)
            router.drain(probes)
            router.flush(self.workers)
            if self.signals:
                self.dispatch_signal(self.signals.popleft())
            execs = router.execs
            while execs:
                pid = execs.popleft()
                if self.uprobes is not None:  # without TLS capture nothing needs the exec
                    self.uprobes.on_exec(pid)
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_SECONDS
                self.housekeep(self.manage_workers)
            if now >= next_stats:
                next_stats = now + s.stats_interval
                self.housekeep(self.log_stats)
                self.housekeep(self.expire_kernel_connections)
                self.housekeep(self.guard_memory)
            if now >= next_uprobe_poll and self.uprobes is not None:
                next_uprobe_poll = now + s.uprobe_poll_interval
                self.uprobes.rescan_all()
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

    def shutdown(self) -> None:
        """Stop the scanner, detach (nothing of ours stays in the kernel), then
        let the workers finish what they hold and flush their sinks."""
        if self.shut_down:
            return
        self.shut_down = True
        if self.uprobes is not None:
            self.uprobes.stop()
        if self.probes is not None:
            self.router.drain(self.probes)
            self.router.flush(self.workers)
            kernel = self.probes.counters()
            self.probes.close()
            self.probes = None
            self.counters.update(kernel)
        self.stop_workers()
        self.log_stats(final=True)
        if self.heartbeat is not None:
            self.send_heartbeat()
            self.heartbeat.close(timeout=2.0)
        self.log.info("stopped", exit_code=self.exit_code)

    # -- workers --------------------------------------------------------------------------

    def spawn_worker(self, index: int) -> WorkerHandle:
        w = WorkerHandle(index, self.settings, self.output, self.ctx)
        w.start()
        return w

    def manage_workers(self) -> None:
        """Read the workers' reports (their heartbeats), stop stalled ones,
        replace dead ones."""
        for w in self.workers:
            w.read_reports()
        self.murder_workers()
        self.reap_workers()

    def murder_workers(self) -> None:
        """Kill workers whose reports stopped: they are stuck. (Workers ignore
        SIGTERM: only the supervisor decides when they stop.)"""
        now = time.monotonic()
        for w in self.workers:
            if w.process.is_alive() and now - w.last_seen > WORKER_STALL_SECONDS:
                self.log.error("worker_stalled", worker=w.index, pid=w.pid,
                               silent_seconds=round(now - w.last_seen, 1))
                self.counters["supervisor.worker_stalled"] += 1
                w.process.kill()
                w.process.join(1.0)

    def reap_workers(self) -> None:
        """Replace workers that have exited; a worker that cannot boot stops the collector."""
        for i, w in enumerate(self.workers):
            if w.process.is_alive():
                continue
            code = w.process.exitcode
            if code == exits.WORKER_BOOT:
                self.log.error("worker_cannot_boot", worker=i, detail="stopping: see the worker's error above")
                self.exit_code = exits.WORKER_BOOT
                self.stopping = True
                return
            self.log.error("worker_died", worker=i, pid=w.pid, exitcode=code)
            self.retire_worker(w)
            nw = self.spawn_worker(i)
            if self.probes is not None:
                try:
                    self.probes.ignore_pid(nw.pid)
                except Exception as exc:  # noqa: BLE001 (a full table must not stop the supervisor)
                    self.counters["supervisor.ignore_pid_failed"] += 1
                    self.log.error("ignore_pid_failed", pid=nw.pid, error=str(exc))
            self.workers[i] = nw

    def retire_worker(self, w: WorkerHandle) -> None:
        """Keep what a dead worker counted, and count what it took with it."""
        self.retired.update(w.last_report.get("counters", {}))
        self.retired["queue.dropped_records"] += w.dropped
        self.retired["worker.restarts"] += 1
        self.retired["queue.dropped_batches_on_restart"] += w.release()

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

    # -- the operator's view --------------------------------------------------------------

    def totals(self) -> Counter:
        kernel = self.probes.counters() if self.probes is not None else {}
        return stats.totals(self.retired, self.counters, self.workers, kernel)

    def log_stats(self, final: bool = False) -> None:
        total = self.totals()
        ring = self.probes.ring if self.probes is not None else None
        self.log.info("stats_final" if final else "stats",
                      records=total.get("worker.records", 0), pairs=total.get("pairs", 0),
                      drops=stats.drops(total), counters=dict(sorted(total.items())),
                      workers=stats.worker_fields(self.workers),
                      uprobes=self.uprobes.attached if self.uprobes is not None else 0,
                      ring_peak_pct=round(100 * self.router.ring_peak / ring.size, 1) if ring is not None else 0,
                      rss_mb=round(self.memory() / 1e6, 1))
        self.router.ring_peak = 0

    def send_heartbeat(self) -> None:
        payload = stats.heartbeat_payload(self.settings, self.totals(), self.started, self.restarts,
                                          self.uprobes.attached if self.uprobes is not None else 0)
        try:
            self.heartbeat.send(payload)
            self.heartbeat.poll()
        except Exception as exc:  # noqa: BLE001 (a heartbeat must never take the collector down)
            self.counters["heartbeat.failed"] += 1
            self.log.warning("heartbeat_failed", error=str(exc))

    # -- limits ----------------------------------------------------------------------------

    def expire_kernel_connections(self) -> None:
        n = self.probes.expire_connections(int(self.settings.inactivity_threshold * 1e9))
        if n:
            self.counters["kernel.expired_connections"] += n

    def memory(self) -> int:
        """Private memory of the collector: the supervisor and its workers."""
        return private_memory([os.getpid()] + [w.pid for w in self.workers if w.pid])

    def guard_memory(self) -> None:
        used = self.memory()
        if used <= self.settings.mem_thresh_restart_bytes:
            return
        self.log.warning("memory_restart", rss_mb=round(used / 1e6, 1),
                         threshold_mb=self.settings.mem_thresh_restart_mb)
        self.shutdown()
        if self.signals or self.stopping:
            self.stopping = True
            return  # a SIGTERM came meanwhile: stop, do not restart
        env = dict(os.environ, AKTO_COLLECTOR_RESTARTS=str(self.restarts + 1))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", "akto_collector", *sys.argv[1:]], env)
