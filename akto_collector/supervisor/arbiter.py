"""The arbiter: owns the probes, keeps the workers alive, runs the loop.

Like gunicorn's arbiter it never parses traffic. Its loop waits 10-150 ms for
the ring buffer (paced by the traffic, ``drain_wait``), lets the router drain
it and hand the batches to the workers, then does the periodic work: reap, stop and replace workers, the
memory guard, kernel table clean-up, stats, heartbeats, the health snapshot
and systemd's watchdog. Signal handlers only enqueue; the loop dispatches.
Exit codes are ``exits``'s. A memory restart or a reload ends the loop, shuts
down cleanly, then execs a fresh image (``reexec``).

Collaborators, each in its own module: ``router`` (the data plane),
``workers`` (one worker process, its pipe and queue), ``uprobes`` (the scan
thread and attaching), ``memory`` (the guard and its back-off), ``health``
and ``metrics`` (the endpoints), ``notify`` (sd_notify), ``stats``. The
kernel side comes from ``probes_factory`` and worker processes from ``ctx``,
so supervision decisions are tested with stand-ins for both.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter, deque

import psutil

from akto_collector import __version__, cgroups, compiled, exits, procfs
from akto_collector.allocator import release_freed_memory, tune_allocator
from akto_collector.config import ConfigError, Settings, with_env_file
from akto_collector.kernel import headers
from akto_collector.kernel.errors import ProbeError
from akto_collector.kernel.records import WAKE_GAP_MS
from akto_collector.supervisor import stats
from akto_collector.supervisor.health import Health, HealthServer
from akto_collector.supervisor.memory import (
    OK,
    RESTART,
    SHED,
    MemoryGuard,
    buffer_budget,
    private_memory,
)
from akto_collector.supervisor.metrics import Snapshot
from akto_collector.supervisor.notify import Notifier
from akto_collector.supervisor.podtags import PodTags
from akto_collector.supervisor.podwatch import PodWatch
from akto_collector.supervisor.reexec import STATE_VAR, ExecState, exec_afresh, file_overrides, starting_environment
from akto_collector.supervisor.router import Router
from akto_collector.supervisor.shedding import Shedder
from akto_collector.supervisor.uprobes import UprobeManager
from akto_collector.supervisor.workers import QUEUE_BATCHES, WorkerHandle

# The drain's wait, paced by the traffic: long enough for the ring to gather
# about DRAIN_BATCH_BYTES at the rate of the last wait, between these bounds.
# Each wake-up costs the collector's processes (the loop, a sender thread and
# a worker per batch) a part with cold caches: at 2k pairs/s a 10 ms pace cost
# ~85 us of collector CPU per pair, 40 ms ~57, 150 ms ~39 (docs/BENCHMARKS.md).
# Heavy traffic still drains every DRAIN_INTERVAL_MS; an empty ring or a
# trickle waits the longest, which is as long as the ring holds a burst of
# ~430 MB/s (150 ms with the default 64 MiB ring; a smaller ring waits
# proportionally less, down to 40 ms). A process's first connection wakes the
# loop (so it is looked up alive: socket_trace.c open_exit), as does an exec
# into an empty ring; the kernel wakes it at most every WAKE_GAP_MS for the
# former, so after a wake-up the next wait is WOKEN_FOLLOW_MS at most, which drains
# the processes that connected first meanwhile.
DRAIN_INTERVAL_MS = 10
IDLE_DRAIN_INTERVAL_MS = 150
IDLE_DRAIN_FLOOR_MS = 40
IDLE_DRAIN_RING_BYTES = 64 << 20  # the ring that waits IDLE_DRAIN_INTERVAL_MS
DRAIN_BATCH_BYTES = 1 << 20
WOKEN_FOLLOW_MS = WAKE_GAP_MS + 1


def longest_wait(ring_size: int) -> int:
    """The wait of an empty ring or a trickle, in ms: what a burst of the
    rate above takes to fill a ring of ``ring_size`` bytes."""
    return max(IDLE_DRAIN_FLOOR_MS, min(IDLE_DRAIN_INTERVAL_MS, IDLE_DRAIN_INTERVAL_MS * ring_size // IDLE_DRAIN_RING_BYTES))


def drain_wait(pending: int, elapsed: float, ring_size: int) -> int:
    """The next wait in ms, after a drain that found ``pending`` bytes gathered
    in ``elapsed`` seconds: the time the ring takes to gather a batch at that
    rate (never more than an eighth of the ring), within the bounds above."""
    longest = longest_wait(ring_size)
    if pending <= 0:
        return longest
    ms = 1000.0 * elapsed * min(DRAIN_BATCH_BYTES, ring_size >> 3) / pending
    return DRAIN_INTERVAL_MS if ms <= DRAIN_INTERVAL_MS else min(int(ms), longest)


HOUSEKEEPING_SECONDS = 1.0
WORKER_STALL_SECONDS = 10.0  # ten missed reports: the worker is stuck
WORKER_KILL_GRACE = 2.0  # after SIGTERM, before SIGKILL
CRASH_BACKOFF_MAX = 60.0  # a worker that keeps crashing is respawned at most this rarely
CRASH_QUIET = 60.0  # a worker that lived this long resets its slot's crash count
FIRST_HEARTBEAT = 2.0  # seconds after ready
# A test hook: shed from the start and never stop (as under a lasting
# overload). Not a setting: no AKTO_ prefix, never documented.
SHED_HOOK = "_AKTO_TEST_SHED_ALWAYS"


def _load_probes(settings, includes: list[str], sock_data: bool):
    from akto_collector.kernel import loader  # noqa: PLC0415 (bcc only where the kernel side runs)

    return loader.Probes(loader.ProbeOptions.from_settings(settings, includes, sock_data))


class Arbiter:
    """The supervisor process."""

    def __init__(self, settings, output: str, log, ctx=None, probes_factory=_load_probes, env=None,
                 notifier: Notifier | None = None) -> None:
        env = os.environ if env is None else env
        self.settings = settings
        self.output = output
        self.log = log
        self.env = env
        self.ctx = ctx if ctx is not None else multiprocessing.get_context("spawn")
        self.probes_factory = probes_factory
        self.signals: deque[int] = deque()
        self.workers: list[WorkerHandle] = []
        self.probes = None
        self.uprobes: UprobeManager | None = None
        self.counters: Counter = Counter()  # the supervisor's own
        # Each process's tag: what /proc says of its pod, and the API, when asked to watch it.
        self.pod_watch = PodWatch(settings.node_name, settings.k8s_service_account_dir, log, self.counters,
                                  environ=env) if settings.k8s_metadata_capture else None
        self.pod_tags = PodTags(settings.inject_tags, self.counters, self.pod_watch, log=log)
        self.router = Router(settings.workers, self.pod_tags)
        self.state = ExecState.from_env(env)
        self.retired: Counter = Counter(self.state.counters)  # totals before this image, and of replaced workers
        self.restarts: Counter = Counter(self.state.restarts)
        self.guard = MemoryGuard.from_state(settings.mem_thresh_restart_bytes, self.state.memory)
        self.health = Health()
        self.notifier = notifier if notifier is not None else Notifier(env, self.counters)
        self.server: HealthServer | None = None
        self.budget: int | None = None  # bytes the workers may buffer (None: TRAFFIC_BUFFER_THRESHOLD)
        self.crashes: Counter = Counter()  # consecutive crashes per worker slot
        self.respawn_at: dict[int, float] = {}  # slot -> when a crashed worker may be respawned
        self.exited: set[int] = set()  # tgids that exited since the last kernel clean-up
        self.stopping = False
        self.exit_code = exits.OK
        self.restart: tuple[str, dict] | None = None  # (cause, environment) to exec once shut down
        self.shut_down = False
        self.heartbeat = None
        self.next_heartbeat = 0.0
        self.shedder = Shedder(settings.ring_buffer_mb << 20, always=env.get(SHED_HOOK) == "1")
        self.bpf_bytes = 0  # the BPF maps and programs, once loaded
        self.memory_dirs = cgroups.own_dirs("memory")
        self._ours_seen: tuple[frozenset[int], bool] = (frozenset(), False)  # see _ours
        self.shed_since = 0.0
        self.detached_at: float | None = None  # when shutdown detached the programs (crosses a restart)
        self.cpu_dirs = cgroups.own_dirs("cpu")
        self.throttled = False
        self.throttled_at: int | None = None

    # -- signals: handlers only enqueue -------------------------------------------------

    def handle_signal(self, signum, _frame) -> None:
        self.signals.append(signum)

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.handle_signal)

    def dispatch_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self.reload()
            return
        self.log.info("stopping", signal=signal.Signals(signum).name)
        self.stopping = True
        self.restart = None  # a stop order wins over a pending restart

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> int:
        self.install_signals()
        try:
            self.start()
            status = compiled.module_status()
            if "stale" in status.values():
                self.log.warning("compiled_core_stale", detail="compiled modules built from other source than theirs "
                                 "run old code; rebuild with make setup or pip install .", modules=status)
            self.health.started = True
            self.count_restart_gap(time.time())
            self.log.info("ready", workers=[w.pid for w in self.workers], pid=os.getpid(),
                          core=compiled.summary(status), metrics=self.server.address if self.server else "")
            self.notifier.ready(self.status_line())
            self.next_heartbeat = time.monotonic() + FIRST_HEARTBEAT
            self.loop()
        except ProbeError as exc:
            self.log.error("probes_failed", error=str(exc))
            self.exit_code = exits.KERNEL
        except ConfigError as exc:
            self.log.error("config_error", error=str(exc))
            self.exit_code = exits.CONFIG
        finally:
            self.shutdown()
        if self.restart is not None and self.exit_code == exits.OK:
            self.log.info("restarting", cause=self.restart[0], restarts=dict(self.restarts))
            exec_afresh(self.restart_env())
        return self.exit_code

    def start(self) -> None:
        """Endpoints, workers, probes, the first scan. Raises ProbeError when
        the kernel side cannot be set up, ConfigError when the endpoints cannot."""
        s = self.settings
        if s.metrics_addr:
            try:
                self.server = HealthServer(s.metrics_addr, self.health)
            except OSError as exc:
                raise ConfigError(f"AKTO_METRICS_ADDR={s.metrics_addr!r}: cannot listen there: {exc.strerror or exc}; "
                                  "expected a free local address, or empty to serve no endpoint") from None
        tune_allocator()
        found = headers.find_kernel_headers()
        includes = headers.use_kernel_headers(found)
        if found.kind != "exact":
            self.log.warning("kernel_headers_fallback", kind=found.kind, using=found.describe())
        headers.ensure_tracefs()
        sock_data = headers.use_sock_tracepoints(s.sock_tracepoints)
        if not sock_data:
            self.log.warning("syscall_data_path", setting=s.sock_tracepoints,
                             detail="no sock:sock_{send,recv}_length tracepoints (Linux 6.3+)" if
                             s.sock_tracepoints == "auto" else "forced by AKTO_SOCK_TRACEPOINTS=off")
        self.log.info("starting", version=__version__, restarts=dict(self.restarts), settings=s.describe())
        if self.pod_watch is not None:
            self.pod_watch.start()  # its first list may arrive while the programs load
        if s.mongo_conn:
            self.log.info("mongo_ignored", detail="AKTO_MONGO_CONN is accepted for manifest compatibility; "
                          "this collector keeps nothing in a database")
        t0 = time.monotonic()
        self.probes = self.probes_factory(s, includes, sock_data)
        self.probes.ignore_pid(os.getpid())
        release_freed_memory()
        self.bpf_bytes = procfs.bpf_memory("/proc", os.getpid())
        self.log.info("probes_loaded", seconds=round(time.monotonic() - t0, 2), capture_plain=s.capture_all,
                      capture_tls=s.capture_ssl, data_path="sock" if sock_data else "syscall",
                      bpf_memory_mb=round(self.bpf_bytes / 1e6, 1))
        # Workers start once the programs are loaded: the collector's own size
        # is known then (the buffers must fit next to it under the memory
        # threshold), and a fork of the supervisor is ignored by the kernel from birth.
        # The BPF maps and the ring buffer count against the threshold too (guard_memory).
        own = sum(private_memory([os.getpid()]).values()) + self.bpf_bytes
        self.budget = buffer_budget(s.buffer_threshold_bytes, s.mem_thresh_restart_bytes, own, s.workers)
        if self.budget < s.buffer_threshold_bytes:
            self.log.warning("buffer_budget_reduced", budget_mb=round(self.budget / 2**20, 1),
                             buffer_threshold_mb=s.buffer_threshold_mb, mem_thresh_restart_mb=s.mem_thresh_restart_mb,
                             supervisor_mb=round(own / 2**20, 1), workers=s.workers,
                             detail="TRAFFIC_BUFFER_THRESHOLD does not fit under AKTO_MEM_THRESH_RESTART next to the "
                                    "collector itself: buffering less, so that an outage does not end in a restart")
        # Every process alive now: their connections may predate the programs and come with no OPEN or ADDR.
        self.pod_tags.scan()
        self.log.info("processes_tagged", processes=len(self.pod_tags.known),
                      in_pods=self.counters["tags.pod_processes"], api=self.pod_watch is not None)
        for i in range(s.workers):
            self.workers.append(self.spawn_worker(i))
            self.probes.ignore_pid(self.workers[-1].pid)
        # The drain costs ~0.5 us a record but must run on time or the ring
        # buffer overflows; raise only the supervisor above the workers.
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -10)
        except OSError:
            pass
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
        probes, router, health = self.probes, self.router, self.health
        ring_size = self.shedder.ring_size
        interval = DRAIN_INTERVAL_MS
        drained = now  # when the last drain began: what the next one finds pending gathered since
        while not self.stopping:
            woken = probes.wait(interval)
            began = time.monotonic()
            router.drain(probes)
            interval = drain_wait(router.pending, began - drained, ring_size)
            if woken and interval > WOKEN_FOLLOW_MS:
                interval = WOKEN_FOLLOW_MS
            drained = began
            self.steer_shedding()
            router.flush(self.workers)
            health.last_loop = now = time.monotonic()
            if self.signals:
                self.dispatch_signal(self.signals.popleft())
            execs = router.execs
            while execs:
                pid = execs.popleft()
                if self.uprobes is not None:  # without TLS capture nothing needs the exec
                    self.uprobes.on_exec(pid)
            if router.exits:
                self.exited.update(router.exits)
                for pid in router.exits:
                    self.pod_tags.forget(pid)
                router.exits.clear()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_SECONDS
                self.housekeep(self.manage_workers)
                self.housekeep(self.guard_memory)
                self.housekeep(self.watch_throttling)
                self.housekeep(self.publish)
                self.housekeep(self.refresh_tags)
                if self.heartbeat is not None:
                    self.housekeep(self.heartbeat.poll)
            if now >= next_stats:
                next_stats = now + s.stats_interval
                self.housekeep(self.log_stats)
                self.housekeep(self.clean_kernel_tables)
                self.housekeep(self.sweep_tags)
            if now >= next_uprobe_poll and self.uprobes is not None:
                next_uprobe_poll = now + s.uprobe_poll_interval
                self.uprobes.rescan_all()
            if self.heartbeat is not None and now >= self.next_heartbeat:
                self.next_heartbeat = now + s.heartbeat_interval
                self.send_heartbeat()

    def steer_shedding(self) -> None:
        """After each drain: tell the kernel whether to shed new connections (shedding.py)."""
        kernel_on = self.probes.shedding()
        # Behind: records pile up in front of a worker faster than it parses
        # them. Not while its broker is down: then the sink holds the byte
        # budget and the outage policy applies (keep the newest, drop the
        # oldest, counted).
        behind = any(2 * w.queue.qsize() > QUEUE_BATCHES or
                     (2 * w.queued_bytes > w.max_queue_bytes and w.last_report.get("sink") != "disconnected")
                     for w in self.workers)
        was = self.shedder.reason
        reason = self.shedder.decide(self.router.pending, kernel_on, behind, self.throttled)
        if (reason is not None) != kernel_on:
            self.probes.set_shedding(reason is not None)
        if reason and not was:
            self.shed_since = time.monotonic()
            self.log.warning("shedding_started", reason=reason,
                             ring_fill_pct=round(100 * self.router.pending / self.shedder.ring_size, 1),
                             detail="new HTTP/1 connections are tracked and counted, not copied; "
                                    "HTTP/2 keeps its headers, not its DATA payloads")
        elif was and not reason:
            self.log.info("shedding_stopped", after_reason=was, seconds=round(time.monotonic() - self.shed_since, 2))

    def watch_throttling(self) -> None:
        """Whether the cgroup throttled us since the last look: shed rather than be throttled."""
        n = cgroups.throttled_periods(self.cpu_dirs)
        self.throttled = n is not None and self.throttled_at is not None and n > self.throttled_at
        self.throttled_at = n

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
        self.health.stopping = True
        if self.restart is None:
            self.notifier.stopping()
        if self.uprobes is not None:
            self.uprobes.stop()
        if self.pod_watch is not None:
            self.pod_watch.stop()
        if self.probes is not None:
            self.router.drain(self.probes)
            self.router.flush(self.workers)
            kernel = self.probes.counters()
            self.detached_at = time.time()
            self.probes.close()
            self.probes = None
            self.counters.update(kernel)
        self.stop_workers()
        self.log_stats(final=True)
        if self.heartbeat is not None:
            self.send_heartbeat()
            self.heartbeat.close(timeout=2.0)
        if self.server is not None:
            self.server.close()
        self.log.info("stopped", exit_code=self.exit_code)

    # -- workers --------------------------------------------------------------------------

    def spawn_worker(self, index: int) -> WorkerHandle:
        w = WorkerHandle(index, self.settings, self.output, self.ctx, self.budget)
        w.start()
        # Its first batch: every process's tag (an idle worker's queue takes it),
        # ahead of what a predecessor left; what waited for the slot is in it.
        records = self.pod_tags.records()
        if records:
            w.submit(b"".join(records), 0)
        self.router.control[index].clear()
        return w

    def manage_workers(self) -> None:
        """Read the workers' reports (their heartbeats), stop stuck ones,
        replace dead ones."""
        for w in self.workers:
            if w.process is not None:
                w.read_reports()
        self.murder_workers()
        self.reap_workers()

    def murder_workers(self) -> None:
        """A worker whose reports stopped is stuck: SIGTERM, then SIGKILL."""
        now = time.monotonic()
        for w in self.workers:
            if w.process is None or not w.process.is_alive():
                continue
            if w.terminated_at:
                if now - w.terminated_at > WORKER_KILL_GRACE:
                    w.process.kill()
            elif now - w.last_seen > WORKER_STALL_SECONDS:
                self.log.error("worker_stalled", worker=w.index, pid=w.pid, silent_seconds=round(now - w.last_seen, 1))
                self.counters["supervisor.worker_stalled"] += 1
                w.terminated_at = now
                w.process.terminate()

    def reap_workers(self) -> None:
        """Replace workers that exited (after a back-off when a slot keeps
        crashing); a worker that cannot boot stops the collector."""
        now = time.monotonic()
        for i, w in enumerate(self.workers):
            if w.process is not None:
                if w.process.is_alive():
                    if now - w.started_at > CRASH_QUIET:
                        self.crashes[i] = 0
                    continue
                code = w.process.exitcode
                if code == exits.WORKER_BOOT:
                    self.log.error("worker_cannot_boot", worker=i, detail="stopping: see the worker's error above")
                    self.exit_code = exits.WORKER_BOOT
                    self.stopping = True
                    return
                lost = self.retire_worker(w)
                self.crashes[i] += 1
                delay = 0.0 if self.crashes[i] <= 1 else min(CRASH_BACKOFF_MAX, 2.0 ** (self.crashes[i] - 2))
                self.respawn_at[i] = now + delay
                self.log.error("worker_died", worker=i, pid=w.pid, exitcode=code, respawn_in=delay, **lost)
                w.process = None  # retired; its queue keeps counting what comes meanwhile
            if now >= self.respawn_at.get(i, 0.0):
                self.replace_worker(i)

    def retire_worker(self, w: WorkerHandle) -> dict[str, int]:
        """Keep what a dead worker counted, count what it held, release its
        thread, pipes and kernel entry. Returns what was lost."""
        report = w.last_report
        lost = {"records": w.release(), "connections": int(report.get("connections", 0)),
                "messages": int(report.get("sink_messages", 0))}
        self.retired.update(report.get("counters", {}))
        self.retired["queue.dropped_records"] += w.dropped
        w.dropped = 0
        w.queue = type(w.queue)(w.queue.maxsize)  # what comes for the slot until it is replaced
        w.submitted_bytes = w.sent_bytes = 0
        self.retired["worker_died.dropped_records"] += lost["records"]
        self.retired["worker_died.dropped_connections"] += lost["connections"]
        self.retired["worker_died.dropped_messages"] += lost["messages"]
        self.restarts["worker"] += 1
        if self.probes is not None and w.pid:
            self.probes.unignore_pid(w.pid)
        return lost

    def replace_worker(self, i: int) -> None:
        old = self.workers[i]
        nw = self.spawn_worker(i)
        nw.take_over(old)  # what was routed to the slot while it waited
        if self.probes is not None:
            try:
                self.probes.ignore_pid(nw.pid)
            except Exception as exc:  # noqa: BLE001 (a full table must not stop the supervisor)
                self.counters["supervisor.ignore_pid_failed"] += 1
                self.log.error("ignore_pid_failed", pid=nw.pid, error=str(exc))
        if self.uprobes is not None:
            self.uprobes.ignore(nw.pid)
        self.workers[i] = nw
        self.respawn_at.pop(i, None)

    def stop_workers(self, timeout: float = 7.0) -> None:
        alive = [w for w in self.workers if w.process is not None]
        for w in alive:
            w.stop()
        deadline = time.monotonic() + timeout
        for w in alive:
            w.process.join(max(0.0, deadline - time.monotonic()))
        for w in alive:
            w.read_reports()
            if w.process.is_alive():
                self.log.warning("worker_kill", worker=w.index, pid=w.pid, queued_batches=w.queue.qsize())
                w.process.kill()
        for w in alive:
            w.process.join(1.0)
            self.counters["queue.dropped_records_at_stop"] += w.dropped_at_stop

    # -- memory, reload -------------------------------------------------------------------

    def memory(self) -> dict[int, int]:
        """Private memory of each process of the collector: the supervisor and its workers."""
        return private_memory([os.getpid()] + [w.pid for w in self.workers if w.process is not None])

    def working_set(self) -> int | None:
        """The cgroup's working set, when the cgroup is the collector's own."""
        pids = {os.getpid()} | {w.pid for w in self.workers if w.process is not None}
        return cgroups.working_set(self.memory_dirs) if cgroups.holds_only(self.memory_dirs, pids, self._ours) \
            else None

    def _ours(self, others: frozenset[int]) -> bool:
        """Whether these processes are the supervisor's descendants (multiprocessing's
        resource tracker): looked up once per set, since that reads every process's stat."""
        if others != self._ours_seen[0]:
            self._ours_seen = (others, others <= _descendants())
        return self._ours_seen[1]

    def guard_memory(self) -> None:
        # What the collector holds: its processes' private memory and the BPF
        # maps (charged to it too; the ring buffer alone is AKTO_RING_BUFFER_MB).
        per_process = self.memory()
        used = sum(per_process.values()) + self.bpf_bytes
        was_shedding = self.router.shed
        verdict = self.guard.check(time.time(), used)
        self.router.shed = verdict == SHED
        if verdict == SHED and not was_shedding:
            self.log.warning("memory_restart_backoff", used_mb=round(used / 1e6, 1),
                             threshold_mb=self.settings.mem_thresh_restart_mb, wait_seconds=self.guard.delay,
                             restarts=self.restarts["memory"], supervisor_mb=round(per_process.get(os.getpid(), 0) / 1e6, 1),
                             workers=[{"worker": w.index, "mb": round(per_process.get(w.pid, 0) / 1e6, 1),
                                       "buffered": w.last_report.get("buffered", 0),
                                       "queued_bytes": w.queued_bytes} for w in self.workers],
                             detail="over the threshold again soon after a restart: shedding load instead of "
                                    "restarting until the wait is over")
        elif verdict == OK and was_shedding:
            self.log.info("memory_backoff_ended", used_mb=round(used / 1e6, 1))
        elif verdict == RESTART:
            self.log.warning("memory_restart", rss_mb=round(used / 1e6, 1),
                             threshold_mb=self.settings.mem_thresh_restart_mb, restarts=self.restarts["memory"])
            self.guard.restarted(time.time())
            self.request_restart("memory", dict(self.env))

    def reload(self) -> None:
        """SIGHUP: read AKTO_ENV_FILE again over the starting environment; a
        valid result restarts with it, an invalid one is refused (the old keeps running)."""
        base = starting_environment(self.env, self.state)
        if not str(base.get("AKTO_ENV_FILE", "")).strip():
            self.log.info("reload_skipped", detail="no AKTO_ENV_FILE to read: logging the stats instead")
            self.log_stats()
            return
        try:
            env = with_env_file(base)
            Settings.from_env(env)
        except ConfigError as exc:
            self.counters["supervisor.reload_refused"] += 1
            self.log.error("reload_refused", error=str(exc), detail="the running configuration stays")
            return
        self.log.info("reloading", file=base["AKTO_ENV_FILE"])
        self.state.file_vars = file_overrides(base, env)
        self.request_restart("reload", env)

    def request_restart(self, cause: str, env: dict) -> None:
        """End the loop; once shut down, exec a fresh image with ``env`` and
        what must cross (restarts, back-off, counters)."""
        self.restarts[cause] += 1
        self.notifier.reloading()
        self.notifier.extend_timeout(120.0)  # the fresh image compiles its programs before READY=1
        self.stopping = True
        self.restart = (cause, env)

    def restart_env(self) -> dict:
        """The environment of the fresh image: the requested one and the state that crosses."""
        env = self.restart[1]
        totals = self.totals()
        self.state.restarts = dict(self.restarts)
        self.state.memory = self.guard.state()
        self.state.counters = dict(totals)
        self.state.detached = self.detached_at if self.detached_at is not None else time.time()
        return dict(env, **{STATE_VAR: self.state.encode()})

    def count_restart_gap(self, now: float) -> None:
        """After an in-place restart, once every probe is attached again: the
        time nothing was captured, from the previous image's detach to now
        (compiling the programs takes most of it), counted and logged."""
        if self.state.detached is not None:
            gap = max(0.0, now - self.state.detached)
            self.state.detached = None
            self.counters["supervisor.dropped.restart_gap_ms"] += round(gap * 1000)
            self.log.warning("restart_gap", seconds=round(gap, 2), restarts=dict(self.restarts),
                             detail="nothing was captured between the previous image's detach and this "
                                    "one's attach")

    # -- tags ---------------------------------------------------------------------------------

    def refresh_tags(self) -> None:
        """Once a second: the tags of the pods the API said something new about, to the workers."""
        if self.pod_watch is not None:
            self.router.broadcast(self.pod_tags.refresh(self.pod_watch.take_changes()))

    def sweep_tags(self) -> None:
        """Every stats interval: processes whose exit was missed, pids reused."""
        self.router.broadcast(self.pod_tags.sweep())

    # -- kernel tables ----------------------------------------------------------------------

    def clean_kernel_tables(self) -> None:
        """Connections idle past TRAFFIC_INACTIVITY_THRESHOLD, and those of
        processes that exited, leave the kernel's table."""
        exited, self.exited = self.exited, set()
        idle, dead = self.probes.expire_connections(int(self.settings.inactivity_threshold * 1e9), exited)
        if idle:
            self.counters["kernel.expired_connections"] += idle
        if dead:
            self.counters["kernel.exited_connections"] += dead

    # -- the operator's view ----------------------------------------------------------------

    def totals(self) -> Counter:
        kernel = self.probes.counters() if self.probes is not None else {}
        total = stats.totals(self.retired, self.counters, self.workers, kernel)
        if self.router.shed_records:
            total["memory.dropped_shed_records"] += self.router.shed_records
        return total

    def status_line(self) -> str:
        total = self.totals()
        return (f"pairs {total.get('pairs', 0)}, records {total.get('worker.records', 0)}, "
                f"dropped {stats.dropped_items(total)}, uprobes {self.attached()}")

    def attached(self) -> int:
        return self.uprobes.attached if self.uprobes is not None else 0

    def publish(self) -> None:
        """Once a second: the snapshot the endpoints read, readiness, the watchdog."""
        now = time.monotonic()
        workers = stats.worker_fields(self.workers)
        self.health.sinks([w["sink"] for w in workers], now)
        ring = self.probes.ring if self.probes is not None else None
        memory = self.memory()
        names = {os.getpid(): "supervisor"} | {w.pid: f"worker-{w.index}" for w in self.workers}
        self.health.snapshot = Snapshot(
            counters=self.totals(), workers=workers, uprobes=self.attached(),
            processes_covered=self.uprobes.processes_covered if self.uprobes is not None else 0,
            ring_fill=self.router.ring_peak / ring.size if ring is not None else 0.0,
            memory={names.get(pid, str(pid)): used for pid, used in memory.items()},
            restarts=self.restarts, ready=self.health.ready(now), healthy=self.health.healthy(now),
            bpf_memory=self.bpf_bytes, working_set=self.working_set())
        if self.health.healthy(now):
            self.notifier.watchdog(now)
        self.notifier.status(self.status_line())

    def log_stats(self, final: bool = False) -> None:
        total = self.totals()
        ring = self.probes.ring if self.probes is not None else None
        self.log.info("stats_final" if final else "stats",
                      records=total.get("worker.records", 0), pairs=total.get("pairs", 0),
                      drops=stats.drops(total), counters=dict(sorted(total.items())),
                      workers=stats.worker_fields(self.workers), uprobes=self.attached(),
                      ring_peak_pct=round(100 * self.router.ring_peak / ring.size, 1) if ring is not None else 0,
                      rss_mb=round(sum(self.memory().values()) / 1e6, 1), bpf_mb=round(self.bpf_bytes / 1e6, 1),
                      working_set_mb=round(ws / 1e6, 1) if (ws := self.working_set()) is not None else None,
                      shedding=self.shedder.reason, restarts=dict(self.restarts))
        self.router.ring_peak = 0

    def send_heartbeat(self) -> None:
        payload = stats.heartbeat_payload(self.settings, self.totals(), self.state.started, self.restarts,
                                          self.attached(), sum(self.memory().values()))
        try:
            self.heartbeat.send(payload)
            self.heartbeat.poll()
        except Exception as exc:  # noqa: BLE001 (a heartbeat must never take the collector down)
            self.counters["heartbeat.failed"] += 1
            self.log.warning("heartbeat_failed", error=str(exc))


def _descendants() -> set[int]:
    """The supervisor's other descendants (a compiler's, multiprocessing's helpers)."""
    try:
        return {c.pid for c in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()
